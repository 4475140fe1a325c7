"""The daemon's own numbers: streams per box, delay, footprint, the alternatives, the limit.

    python bench/daemon.py            # the suite (about 15 min on 2 cores) -> docs/BENCHMARKS.md
    python bench/daemon.py --quick    # the smallest size of every part (the CI smoke test)

Every part writes its raw figures to bench/results/daemon[-quick].json; the report
(docs/BENCHMARKS.md, or --out) is rendered from them with the machine's description and how
each figure was measured. Times are medians over repeats with their spread (min-max);
comparisons are ratios measured side by side in the same run, as this machine is shared.

The bundle is the default ensemble (``export --system embedding+stats``: the CNN's attribute
embedding and the spectral-statistics detector, standardised and weighted) of a small model
trained for one epoch on synthetic gearbox sounds; its cost per hop does not depend on how
well it was trained. It is built once under --work and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MACHINE = "gearbox"
HOP_SECONDS = 0.512  # 0.5 s asked of the default config = 2 patches of 0.256 s


def _cli(*argv: str) -> None:
    """One ``asd-edge`` command in a fresh interpreter (training imports torch; this one
    stays light)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "edge.cli", *argv], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"asd-edge {' '.join(argv)} failed:\n{done.stderr[-3000:]}")


def prepare(work: Path) -> dict[str, Path]:
    """The bundle (default ensemble) and a 40 s recording with a fault, built once."""
    paths = {"data": work / "data", "run": work / "run", "models": work / "models",
             "stream": work / "stream" / f"{MACHINE}.wav"}
    if not (paths["models"] / MACHINE / "bundle.json").is_file():
        _cli("synth", str(paths["data"]), "--machines", MACHINE, "--sections", "1",
             "--train", "8", "--target-train", "2", "--test", "4", "--seed", "0")
        _cli("train", "--data", str(paths["data"]), "--machines", MACHINE, "--out",
             str(paths["run"]), "--epochs", "1", "--seed", "0")
        _cli("export", "--run", str(paths["run"]), "--machine", MACHINE, "--data",
             str(paths["data"]), "--out", str(paths["models"]), "--system", "embedding+stats")
    if not paths["stream"].is_file():
        _cli("synth", str(paths["stream"]), "--stream", "--machine", MACHINE, "--section", "0",
             "--seconds", "60", "--fault-start", "25", "--fault-seconds", "15",
             "--fault-severity", "1.5", "--seed", "0")
    return paths


# -- the machine --------------------------------------------------------------------------------

def machine_description() -> dict:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)), "memory_gib": memory_gib,
            "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "os": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in load]}


def spread(values: list[float], digits: int = 3) -> dict:
    """Median and range of repeated measurements."""
    array = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(array)), digits),
            "min": round(float(array.min()), digits), "max": round(float(array.max()), digits),
            "n": int(array.size)}


def peak_gflops(repeats: int, size: int = 2048) -> dict:
    """float32 matrix product (size x size) @ (size x size), numpy's BLAS on every core:
    2 * size**3 floating-point operations (= size**3 multiply-adds) per product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - started) / 1e9)
    return {"size": size, "gflops": spread(rates, 1)}


# -- streams per box: one daemon, N real-time file streams ----------------------------------------

def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    now = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return round(now, 1), round(peak, 1)


def child(args: argparse.Namespace) -> None:
    """One daemon with ``--streams`` file streams at real-time pace, in this process: the
    config is written and loaded as ``asd-edge run --config`` would, the outputs are the
    run command's own (journal; MQTT when --mqtt). Prints one JSON line."""
    import yaml

    from edge.cli.run import build_outputs
    from edge.config import load_config
    from edge.daemon import Daemon

    started = time.monotonic()
    work = Path(args.child_dir)
    streams = [{"name": f"s{i:04d}", "machine": MACHINE, "section": 0,
                "source": {"type": "file", "path": str(args.stream), "speed": "realtime"}}
               for i in range(args.streams)]
    config_file = work / "edge.yaml"
    config_file.write_text(yaml.safe_dump({
        "node": "bench", "models_dir": str(args.models), "device": "cpu",
        "threads": args.threads, "state_dir": str(work / "state"), "streams": streams,
        **({"mqtt": {"url": args.mqtt}} if args.mqtt else {}),
        "metrics": {"enabled": False}}))
    config = load_config(config_file)
    daemon = Daemon(config, max_seconds=args.seconds)
    loaded = time.monotonic() - started
    latencies: list[tuple[float, float]] = []  # (wall time, hop latency s)
    first: list[float] = []

    def on_score(message) -> None:
        now = time.time()
        if not first:
            first.append(time.monotonic() - started)
        latencies.append((now, now - message.time.timestamp()))

    daemon.score_listener = on_score
    outputs = build_outputs(config)
    cpu_marks: list[tuple[float, float]] = []
    rss_marks: list[float] = []
    stop = threading.Event()

    def sample() -> None:  # CPU and memory once a second while it runs
        while not stop.wait(1.0):
            times = os.times()
            cpu_marks.append((time.monotonic(), times.user + times.system))
            rss_marks.append(rss_mib()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run_started = time.time()
    main_cpu, process_cpu = time.thread_time(), time.process_time()
    try:
        daemon.run(outputs)
    finally:
        main_cpu, process_cpu = time.thread_time() - main_cpu, time.process_time() - process_cpu
        outputs.close()
        stop.set()
    stream_seconds = args.streams * args.seconds
    # steady state: hops whose window filled after the first 10 s (+ 2 s settling)
    steady_from = run_started + 12.0
    steady = np.array([lat for wall, lat in latencies if wall >= steady_from] or [np.nan])
    marks = [(t, c) for t, c in cpu_marks if t - cpu_marks[0][0] >= 10.0] if cpu_marks else []
    cores = ((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
             if len(marks) >= 2 else float("nan"))
    stats = [s.stats.snapshot() for s in daemon._sources]
    expected_hops = args.streams * int((args.seconds - 10.0) / HOP_SECONDS)
    print(json.dumps({
        "streams": args.streams, "seconds": args.seconds,
        "hops_scored": daemon.windows_scored, "hops_expected_at_least": expected_hops,
        "latency_ms_p50": round(float(np.nanpercentile(steady, 50)) * 1e3, 1),
        "latency_ms_p99": round(float(np.nanpercentile(steady, 99)) * 1e3, 1),
        "latency_ms_max": round(float(np.nanmax(steady)) * 1e3, 1),
        "dropped_blocks": sum(int(s["dropped_blocks"]) for s in stats),
        "overflows": sum(int(s["overflows"]) for s in stats),
        "cpu_cores": round(cores, 2), "rss_mib": max(rss_marks, default=rss_mib()[0]),
        "rss_peak_mib": rss_mib()[1], "load_s": round(loaded, 2),
        "first_score_s": round(first[0], 2) if first else None,
        "events": daemon.events_sent,
        # CPU per second of one stream's audio: the cost, whatever the load of the machine
        "main_thread_cpu_ms_per_stream_s": round(main_cpu / stream_seconds * 1e3, 3),
        "process_cpu_ms_per_stream_s": round(process_cpu / stream_seconds * 1e3, 3),
        "load_average": round(os.getloadavg()[0], 2)}), flush=True)


def run_daemon(paths: dict[str, Path], streams: int, seconds: float, threads: int,
               mqtt: str | None = None, profile: Path | None = None) -> dict:
    """One ``child`` in a fresh interpreter (its memory is its own)."""
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as folder:
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += [str(Path(__file__).resolve()), "--child", "--child-dir", folder,
                 "--streams", str(streams), "--seconds", str(seconds),
                 "--threads", str(threads), "--models", str(paths["models"]),
                 "--stream", str(paths["stream"])]
        if mqtt:
            argv += ["--mqtt", mqtt]
        done = subprocess.run(argv, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=seconds * 6 + 120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(f"daemon with {streams} streams failed:\n{done.stderr[-3000:]}")
        return json.loads(lines[-1])


def keeps_up(row: dict) -> bool:
    """No audio lost, every hop scored, p99 hop latency under the hop."""
    return (row["dropped_blocks"] == 0 and row["overflows"] == 0
            and row["hops_scored"] >= row["hops_expected_at_least"]
            and row["latency_ms_p99"] < HOP_SECONDS * 1e3)


def streams_per_box(paths: dict[str, Path], quick: bool, threads: int) -> dict:
    """N = 1, 2, 4, ... until a run falls behind; the largest N that keeps up is run again
    (repeats) for its spread."""
    seconds = 12.0 if quick else 25.0
    start, limit = (1, 2) if quick else (1, 2048)
    rows = []
    n = start
    while n <= limit:
        row = run_daemon(paths, n, seconds, threads)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        print("streams", json.dumps(row), flush=True)
        if not row["keeps_up"]:
            break
        n *= 2
    held = max((r["streams"] for r in rows if r["keeps_up"]), default=0)
    repeats = []
    if held and not quick:
        for _ in range(2):
            row = run_daemon(paths, held, seconds, threads)
            row["keeps_up"] = keeps_up(row)
            repeats.append(row)
            print("repeat", json.dumps(row), flush=True)
    at_held = [r for r in rows + repeats if r["streams"] == held]
    return {"seconds_per_run": seconds, "threads": threads, "rows": rows, "repeats": repeats,
            "streams_held": held,
            "held_in_every_repeat": all(r["keeps_up"] for r in at_held),
            "at_held": {key: spread([r[key] for r in at_held], 1) for key in
                        ("latency_ms_p50", "latency_ms_p99", "cpu_cores", "rss_mib")}
            if at_held else {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size of every part")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "asd-edge-bench"),
                        help="bundle and recordings, built once and reused")
    parser.add_argument("--out", help="report (default docs/BENCHMARKS.md; --quick: none "
                                      "unless given)")
    parser.add_argument("--results", help="raw figures (JSON)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--only", help="comma-separated parts to run (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    paths = prepare(Path(args.work))
    results = {"machine": machine_description(), "quick": args.quick}
    results["streams"] = streams_per_box(paths, args.quick, args.threads)
    out = Path(args.results) if args.results else RESULTS / (
        "daemon-quick.json" if args.quick else "daemon.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
