"""Training throughput: clips per second of ``asd-edge train`` on this CPU (and CUDA if present).

    python bench/train_throughput.py [--clips-per-section 30] [--epochs 3] [--threads N]

Writes a synthetic data set (``edge.synth``, 10 s clips) to a temporary folder, times the
spectrogram cache build once, then trains the default model (disentangled objective, batch
64) for a few epochs on each available device. Throughput is training steps only (one random
patch per clip, forward, backward, AdamW), from the epochs after the first; the end-of-epoch
batch-norm recalibration and validation are timed apart in the epoch's wall time.
Results go to ``bench/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from edge.dataset import scan  # noqa: E402
from edge.synth import synthesize_dataset  # noqa: E402
from training import data as tdata  # noqa: E402
from training.loop import FRONT_ENDS, TrainConfig  # noqa: E402
from training.train import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", default="fan,gearbox")
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--clips-per-section", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"host": {"cpu_count": os.cpu_count(), "torch_threads": args.threads,
                              "platform": platform.platform(), "torch": str(torch.__version__),
                              "processor": cpu_name()},
                     "data": {"machines": args.machines, "sections": args.sections,
                              "clips_per_section": args.clips_per_section, "seconds": 10.0},
                     "runs": []}
    with tempfile.TemporaryDirectory(prefix="asd-train-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        synthesize_dataset(root / "data", machines=args.machines.split(","),
                           sections=args.sections, n_train=args.clips_per_section,
                           n_target_train=max(5, args.clips_per_section // 10), n_test=1,
                           seed=0)
        results["data"]["synth_seconds"] = time.perf_counter() - started
        clips = scan(root / "data").select(split="train", label="normal")
        started = time.perf_counter()
        # the front end the runs below train on (the default), so that they reuse this cache
        front_end = FRONT_ENDS[TrainConfig.model_fields["front_end"].default]
        tdata.build_cache(clips, front_end, root / "cache")
        cache_seconds = time.perf_counter() - started
        results["cache"] = {"clips": len(clips), "seconds": cache_seconds,
                            "clips_per_second": len(clips) / cache_seconds}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            config = TrainConfig(data=str(root / "data"), machines=["all"],
                                 out=str(root / f"run-{device}"), epochs=args.epochs,
                                 batch_size=args.batch_size, device=device,
                                 cache_dir=str(root / "cache"), progress=False)
            started = time.perf_counter()
            checkpoint = train(config)
            wall = time.perf_counter() - started
            payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
            metrics = [json.loads(line) for line in
                       (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
            steady = metrics[1:] or metrics
            run = {"device": device,
                   "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
                   "clips_per_second": sum(m["clips_per_second"] for m in steady) / len(steady),
                   "epoch_seconds": [m["seconds"] for m in metrics],
                   "wall_seconds": wall, "train_clips": payload["data"]["train_clips"],
                   "batch_size": args.batch_size, "amp": device == "cuda",
                   **payload["model_summary"],
                   "final_val_section_accuracy": metrics[-1]["val_section_accuracy"],
                   "final_val_attribute_accuracy": metrics[-1]["val_attribute_accuracy"]}
            results["runs"].append(run)
            print(f"{device}: {run['clips_per_second']:.1f} clips/s "
                  f"({run['parameters']} parameters, "
                  f"{run['multiply_adds_per_second'] / 1e6:.0f} M multiply-adds per second "
                  "of audio)")
    print(f"spectrogram cache: {results['cache']['clips_per_second']:.1f} clips/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
