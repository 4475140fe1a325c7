"""What a network costs on the edge, runs side by side: parameters, multiply-adds per second of
audio, and ONNX Runtime's time (one thread) to embed one hop's new patch and one 10 s window
(16 patches), timed interleaved so a busy machine slows every run alike.

    python bench/model_cost.py --run default=RUN_A --run spectrum=RUN_B [--repeats 40]

The first run is the reference of the ratios. Writes bench/results/model_cost.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge.inference.onnx_runtime import OnnxEmbedder
from export.onnx_models import export_model
from training.infer import load_run
from training.model import count_embedding_parameters, multiply_adds_per_patch

RESULTS = Path(__file__).resolve().parent / "results" / "model_cost.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows, sessions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.run:
            name, _, folder = item.partition("=")
            run = load_run(folder)
            path = export_model(run, Path(tmp) / f"{name}.onnx")
            embedder = OnnxEmbedder(path, run.front_end, run.patching, device="cpu", threads=1)
            frames = run.patching.patch_frames
            seconds = frames * run.front_end.hop_length / run.front_end.sample_rate
            patch_seconds = run.patching.patch_hop * run.front_end.hop_length \
                / run.front_end.sample_rate  # new audio per patch in a stream
            rows[name] = {
                "run": folder, "input_rows": run.front_end.n_bins, "patch_frames": frames,
                "patch_seconds": round(seconds, 3),
                "parameters": count_embedding_parameters(run.model),
                "mult_adds_per_patch": multiply_adds_per_patch(run.model),
                "mult_adds_per_second": round(multiply_adds_per_patch(run.model)
                                              / patch_seconds),
                "onnx_ms_per_patch": [], "onnx_ms_per_window": []}
            sessions[name] = (embedder, [rng.standard_normal(
                (n, run.front_end.n_bins, frames)).astype(np.float32) for n in (1, 16)])
        for _ in range(args.repeats):  # interleaved
            for name, (embedder, (one, sixteen)) in sessions.items():
                for key, batch in (("onnx_ms_per_patch", one), ("onnx_ms_per_window", sixteen)):
                    start = time.perf_counter()
                    embedder.embed(batch)
                    rows[name][key].append((time.perf_counter() - start) * 1e3)
    reference = next(iter(rows))
    for row in rows.values():
        for key in ("onnx_ms_per_patch", "onnx_ms_per_window"):
            row[key] = round(float(np.median(row[key][1:])), 3)
    for name, row in rows.items():
        base = rows[reference]
        row["ratio_to_" + reference] = {
            key: round(row[key] / base[key], 2) for key in
            ("parameters", "mult_adds_per_second", "onnx_ms_per_patch", "onnx_ms_per_window")}
        print(name, json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": 1, "repeats": args.repeats, "runs": rows},
                                  indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
