"""Embedding a 10 s clip (16 patches): ONNX Runtime (the edge) vs PyTorch eager, one thread.

    python bench/inference_latency.py --run demo-out/run --models demo-out/models --machine gearbox

Writes the two latencies side by side, their ratio and the real-time factor to
bench/results/inference_latency.json (keyed by the front end's number of rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from edge.bundle.load import load_bundle
from training.infer import load_run

RESULTS = Path(__file__).resolve().parent / "results" / "inference_latency.json"


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="demo-out/run")
    parser.add_argument("--models", default="demo-out/models")
    parser.add_argument("--machine", default="gearbox")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    embedder = load_bundle(args.models, args.machine, device="cpu", threads=1).system.embedder
    if embedder is None:
        raise SystemExit(f"{args.models}/{args.machine} has no network to time")
    run = load_run(args.run)
    patches = np.random.default_rng(0).standard_normal(
        (16, embedder.n_bins, embedder.patch_frames)).astype(np.float32)
    ort_ms = median_ms(lambda: embedder.embed(patches), args.repeats)
    torch_ms = median_ms(lambda: run.embed(patches), max(5, args.repeats // 3))
    row = {"rows": embedder.n_bins, "onnxruntime_ms": round(ort_ms, 2),
           "pytorch_eager_ms": round(torch_ms, 2), "speedup": round(torch_ms / ort_ms, 1),
           "realtime_factor_onnxruntime": round(10_000 / ort_ms), "threads": 1,
           "provider": embedder.provider}
    print(json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[f"F={embedder.n_bins}"] = row
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
