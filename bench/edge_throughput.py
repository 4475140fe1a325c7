"""Edge cost: latency per hop and how many streams one process holds in real time.

    python bench/edge_throughput.py --models demo-out/models --machine fan [--threads 1]

For 1, 2, 4, ... streams of the bundle's system, every stream gets one hop of audio (0.512 s),
the new patches of all streams go through ONNX Runtime in one batch, and every window is
scored: the time of that cycle is the latency per hop, and a process keeps up while it stays
under the hop length. Results (side by side, with the real-time factor) go to
bench/results/edge_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from edge.bundle.load import load_bundle
from edge.streaming import window_patches_for

RESULTS = Path(__file__).resolve().parent / "results" / "edge_throughput.json"


def measure(bundle, n_streams: int, hops: int, rng: np.random.Generator) -> dict:
    system = bundle.system
    window = window_patches_for(10.0, system.front_end, system.patching)
    streams = [system.stream(window, 1) for _ in range(n_streams)]
    hop = system.patching.patch_hop * system.front_end.hop_length
    warm = window + 1  # fill every window before timing
    audio = (rng.standard_normal((n_streams, (warm + hops) * hop + system.front_end.n_fft))
             * 0.05).astype(np.float32)
    cycle_seconds, inference_seconds = [], []
    position = 0
    for step in range(warm + hops):
        size = hop + (system.front_end.n_fft if step == 0 else 0)
        started = time.perf_counter()
        pending = [s.push(audio[i, position:position + size]) for i, s in enumerate(streams)]
        section = attribute = None
        batch = np.concatenate(pending)
        if system.embeds and batch.shape[0]:
            t0 = time.perf_counter()
            section, attribute = system.embedder.embed(batch)
            inference_seconds.append(time.perf_counter() - t0)
        row = 0
        for stream, new in zip(streams, pending, strict=True):
            rows = slice(row, row + new.shape[0])
            row += new.shape[0]
            for w in stream.accept(None if section is None else section[rows],
                                   None if attribute is None else attribute[rows]):
                system.score_window(w, system.sections[0])
        elapsed = time.perf_counter() - started
        position += size
        if step >= warm:
            cycle_seconds.append(elapsed)
    hop_seconds = hop / system.front_end.sample_rate
    cycle = np.array(cycle_seconds)
    return {"streams": n_streams, "hop_s": hop_seconds,
            "latency_ms_median": round(float(np.median(cycle)) * 1e3, 3),
            "latency_ms_p95": round(float(np.percentile(cycle, 95)) * 1e3, 3),
            "inference_ms_median": round(float(np.median(inference_seconds)) * 1e3, 3)
            if inference_seconds else None,
            "realtime_factor": round(hop_seconds / float(np.median(cycle)), 1),
            "keeps_up": bool(np.percentile(cycle, 95) < hop_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo-out/models")
    parser.add_argument("--machine", default="fan")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hops", type=int, default=30)
    parser.add_argument("--max-streams", type=int, default=64)
    args = parser.parse_args()
    bundle = load_bundle(args.models, args.machine, device="cpu", threads=args.threads)
    rng = np.random.default_rng(0)
    rows = []
    n = 1
    while n <= args.max_streams:
        row = measure(bundle, n, args.hops, rng)
        rows.append(row)
        print(json.dumps(row))
        if not row["keeps_up"]:
            break
        n *= 2
    result = {"bundle": str(bundle.path), "members": [m.name for m in bundle.system.members],
              "provider": bundle.provider, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "rows": rows,
              "max_streams_in_real_time": max((r["streams"] for r in rows if r["keeps_up"]),
                                              default=0)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    existing["+".join(result["members"]) + f"@{args.threads}t"] = result
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"max streams in real time: {result['max_streams_in_real_time']}; -> {RESULTS}")


if __name__ == "__main__":
    main()
