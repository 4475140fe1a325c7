"""On a machine with an NVIDIA GPU: does the CUDA provider really run, how many streams' worth
of patches one GPU embeds, and training throughput. Writes docs/gpu_results.md (--out).

    bench/gpu.sh                         # installs the gpu extra, then runs this
    python bench/gpu.py --dry-run        # on a CPU: the same steps on the CPU provider

Steps: (1) ``onnxruntime.get_providers``/``get_available_providers`` include
CUDAExecutionProvider; (2) the bundle's session (``edge.bundle.load``, ``--device cuda``)
reports CUDA as the provider in use (``session.get_providers()[0]``), so there was no silent
fall-back to the CPU; (3) patches per second through the exported network with I/O binding
(input and outputs kept on the GPU, batch sizes 64-4096), turned into streams per GPU at one
patch per 0.512 s hop per stream; (4) ``bench/train_throughput.py`` (clips per second on CUDA
vs this CPU) and the time it extrapolates to pre-train on all seven machine types at DCASE
size. The bundle is bench/daemon.py's (built once under --work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import MACHINE, ROOT, machine_description, prepare, spread  # noqa: E402

DCASE_CLIPS = 7 * 6 * 1000  # 7 machine types x 6 sections x ~1000 normal training clips
PRETRAIN_EPOCHS = 20


def io_binding_rate(model: Path, device: str, batch: int, n_bins: int, frames: int,
                    repeats: int) -> dict:
    """Patches per second with the input and outputs bound on ``device`` (no host copies in
    the timed loop)."""
    import onnxruntime as ort

    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                 else ["CPUExecutionProvider"])
    session = ort.InferenceSession(str(model), providers=providers)
    patches = np.random.default_rng(0).standard_normal((batch, n_bins, frames)).astype(
        np.float32)
    where = "cuda" if device == "cuda" else "cpu"
    value = ort.OrtValue.ortvalue_from_numpy(patches, where, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, value)
    for output in session.get_outputs():
        binding.bind_output(output.name, where)
    session.run_with_iobinding(binding)  # warm-up (CUDA kernels, memory arena)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append(time.perf_counter() - started)
    rates = [batch / t for t in times]
    return {"batch": batch, "provider": session.get_providers()[0],
            "patches_per_s": spread(rates, 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU provider, small sizes")
    parser.add_argument("--work", default="/tmp/asd-edge-bench")
    parser.add_argument("--out", default=str(ROOT / "docs" / "gpu_results.md"))
    args = parser.parse_args()
    import onnxruntime as ort

    device = "cpu" if args.dry_run else "cuda"
    report: dict = {"machine": machine_description(), "dry_run": args.dry_run,
                    "available_providers": ort.get_available_providers(),
                    "device": ort.get_device()}
    lines = ["# GPU results", "",
             "Written by `bench/gpu.sh` (bench/gpu.py)" + (
                 " as a **dry run on the CPU provider**: the steps work; no GPU figure here."
                 if args.dry_run else "."), ""]
    cuda_there = "CUDAExecutionProvider" in report["available_providers"]
    lines.append(f"- onnxruntime {ort.__version__}, device `{report['device']}`, available "
                 f"providers: {', '.join(report['available_providers'])}")
    if device == "cuda" and not cuda_there:
        lines.append("- **CUDAExecutionProvider is not available**: install the gpu extra "
                     "(`pip install -c constraints.txt '.[gpu]'`) with CUDA 12 and cuDNN 9.")
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 1
    paths = prepare(Path(args.work))
    from edge.bundle.load import load_bundle

    bundle = load_bundle(paths["models"], MACHINE, device=device)
    embedder = bundle.system.embedder
    session_providers = embedder.session.get_providers() if hasattr(embedder, "session") \
        else [bundle.provider]
    lines.append(f"- the bundle's session (`--device {device}`): provider in use "
                 f"`{bundle.provider}`, session providers {session_providers}")
    on_device = bundle.provider == ("CUDAExecutionProvider" if device == "cuda"
                                    else "CPUExecutionProvider")
    lines.append(f"- runs on the asked device: **{'yes' if on_device else 'NO'}**")
    lines += ["", "## Streams per GPU (the network only, I/O binding)", "",
              "| batch | provider | patches/s (median, min-max) | streams at 1 patch / 0.512 s |",
              "|---|---|---|---|"]
    rows = []
    for batch in ((16, 64) if args.dry_run else (64, 256, 1024, 4096)):
        row = io_binding_rate(paths["models"] / MACHINE / "model.onnx", device, batch,
                              embedder.n_bins, embedder.patch_frames, 5 if args.dry_run else 30)
        rows.append(row)
        rate = row["patches_per_s"]
        lines.append(f"| {batch} | {row['provider']} | {rate['median']:.0f} ({rate['min']:.0f}-"
                     f"{rate['max']:.0f}) | {rate['median'] * 0.512:.0f} |")
    lines += ["", "The front end, scoring and alarm rule stay on the CPU (docs/BENCHMARKS.md: "
              "one process's main thread bounds the streams per box long before the GPU).", ""]
    report["io_binding"] = rows
    train_json = Path(args.work) / "train_throughput.json"
    argv = [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--out",
            str(train_json)]
    if args.dry_run:
        argv += ["--machines", "gearbox", "--sections", "1", "--clips-per-section", "4",
                 "--epochs", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines += ["## Training throughput", ""]
    if done.returncode:
        lines.append(f"bench/train_throughput.py failed: {done.stderr[-500:]}")
    else:
        runs = json.loads(train_json.read_text())["runs"]
        report["training"] = runs
        for run in runs:
            hours = DCASE_CLIPS * PRETRAIN_EPOCHS / run["clips_per_second"] / 3600
            lines.append(f"- {run['device']} ({run['device_name']}): "
                         f"{run['clips_per_second']:.1f} clips/s (batch {run['batch_size']}, "
                         f"AMP {run['amp']}); pre-training on all seven machine types at DCASE "
                         f"size ({DCASE_CLIPS:,} clips x {PRETRAIN_EPOCHS} epochs) would take "
                         f"**{hours:.1f} h**")
    lines += ["", "```json", json.dumps(report, indent=1)[:6000], "```"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))
    return 0 if on_device else 1


if __name__ == "__main__":
    sys.exit(main())
