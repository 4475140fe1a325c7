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
import contextlib
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

from edge.daemon import blas_single_threaded

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MACHINE = "gearbox"
HOP_SECONDS = 0.512  # 0.5 s asked of the default config = 2 patches of 0.256 s


def _cli(*argv: str, in_process: bool = False) -> None:
    """One ``asd-edge`` command in a fresh interpreter (training imports torch; this one
    stays light), or here when ``in_process`` (the edge's own commands, no torch)."""
    if in_process:
        from edge.cli import main as asd_edge

        if asd_edge(list(argv)):
            raise SystemExit(f"asd-edge {' '.join(argv)} failed")
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "edge.cli", *argv], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"asd-edge {' '.join(argv)} failed:\n{done.stderr[-3000:]}")


def prepare(work: Path, quick: bool = False) -> dict[str, Path]:
    """The bundle and a recording with a fault, built once under ``work``.

    Full: the default ensemble (a model trained for one epoch + the statistics detector) and
    60 s with a fault at 25-40 s. Quick: a statistics-only bundle enrolled from a few clips (no
    training, no torch) and 6 s of audio (the PyTorch part trains its own: ``prepare_torch``)."""
    work = work / ("quick" if quick else "full")
    paths = {"data": work / "data", "run": work / "run", "models": work / "models",
             "stream": work / "stream" / f"{MACHINE}.wav"}
    if not (paths["models"] / MACHINE / "bundle.json").is_file():
        _cli("synth", str(paths["data"]), "--machines", MACHINE, "--sections", "1",
             "--train", "4" if quick else "8", "--target-train", "2", "--test", "2",
             "--seed", "0", in_process=True)
        if quick:
            _cli("enroll", "--dir", str(paths["data"] / MACHINE / "train"), "--machine",
                 MACHINE, "--section", "0", "--models", str(paths["models"]), "--domain",
                 "source", "--clip-quantile-thresholds", in_process=True)
        else:
            _cli("train", "--data", str(paths["data"]), "--machines", MACHINE, "--out",
                 str(paths["run"]), "--epochs", "1", "--seed", "0")
            _cli("export", "--run", str(paths["run"]), "--machine", MACHINE, "--data",
                 str(paths["data"]), "--out", str(paths["models"]), "--system",
                 "embedding+stats")
    if not paths["stream"].is_file():
        _cli("synth", str(paths["stream"]), "--stream", "--machine", MACHINE, "--section", "0",
             "--seconds", "6" if quick else "60", "--fault-start", "2" if quick else "25",
             "--fault-seconds", "2" if quick else "15", "--fault-severity", "1.5",
             "--seed", "0", in_process=True)
    return paths


def prepare_torch(paths: dict[str, Path], quick: bool) -> dict[str, Path]:
    """A bundle with the network and the trained run it was exported from (part (d) runs the
    PyTorch model of one beside the ONNX model of the other). Full: ``prepare``'s own. Quick: a
    model trained for one epoch on the quick clips and exported with the statistics detector
    as the full bundle is, built once under --work (the quick suite's only training)."""
    if not quick:
        return {"models": paths["models"], "run": paths["run"]}
    folder = paths["data"].parent / "torch"
    out = {"models": folder / "models", "run": folder / "run"}
    if not (out["models"] / MACHINE / "bundle.json").is_file():
        _cli("train", "--data", str(paths["data"]), "--machines", MACHINE, "--out",
             str(out["run"]), "--epochs", "1", "--seed", "0")
        _cli("export", "--run", str(out["run"]), "--machine", MACHINE, "--data",
             str(paths["data"]), "--out", str(out["models"]), "--system", "embedding+stats")
    return out


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
                "window_seconds": args.window,
                "source": {"type": "file", "path": str(args.stream), "speed": "realtime",
                           "block_seconds": args.block_seconds}}
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
    # steady state: hops after the first window filled (+ 2 s settling)
    steady_from = run_started + args.window + min(2.0, args.seconds - args.window - 1.0)
    steady = np.array([lat for wall, lat in latencies if wall >= steady_from] or [np.nan])
    marks = ([(t, c) for t, c in cpu_marks if t - cpu_marks[0][0] >= args.window - 1.0]
             if cpu_marks else [])
    cores = ((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
             if len(marks) >= 2 else float("nan"))
    stats = [s.stats.snapshot() for s in daemon._sources]
    expected_hops = args.streams * int((args.seconds - args.window) / HOP_SECONDS)
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
               window: float = 10.0, profile: Path | None = None,
               block_seconds: float = 0.1) -> dict:
    """One ``child`` in a fresh interpreter (its memory is its own)."""
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as folder:
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += [str(Path(__file__).resolve()), "--child", "--child-dir", folder,
                 "--streams", str(streams), "--seconds", str(seconds),
                 "--threads", str(threads), "--models", str(paths["models"]),
                 "--stream", str(paths["stream"]), "--window", str(window),
                 "--block-seconds", str(block_seconds)]
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


def streams_per_box(paths: dict[str, Path], quick: bool, threads: int, work: Path) -> dict:
    """N = 1, 2, 4, ... until a run falls behind; the largest N that keeps up is run again
    (repeats) for its spread, and once more under cProfile for where the main thread goes."""
    window, seconds = (2.0, 3.5) if quick else (10.0, 25.0)
    limit = 2 if quick else 2048
    rows = []
    n = 1
    while n <= limit:
        row = run_daemon(paths, n, seconds, threads, window)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        print("streams", json.dumps(row), flush=True)
        if not row["keeps_up"]:
            break
        n *= 2
    held = max((r["streams"] for r in rows if r["keeps_up"]), default=0)
    if not quick and held and rows[-1]["streams"] == 2 * held:  # one step between the two
        row = run_daemon(paths, held * 3 // 2, seconds, threads, window)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        print("streams", json.dumps(row), flush=True)
        held = row["streams"] if row["keeps_up"] else held
    repeats, profile = [], []
    if held and not quick:
        for _ in range(2):
            row = run_daemon(paths, held, seconds, threads, window)
            row["keeps_up"] = keeps_up(row)
            repeats.append(row)
            print("repeat", json.dumps(row), flush=True)
        profile = profile_top(paths, max(held, 128), seconds, threads, work)
    at_held = [r for r in rows + repeats if r["streams"] == held]
    keys = ("latency_ms_p50", "latency_ms_p99", "cpu_cores", "rss_mib",
            "main_thread_cpu_ms_per_stream_s", "process_cpu_ms_per_stream_s")
    costs = [r["main_thread_cpu_ms_per_stream_s"] for r in rows + repeats
             if r["streams"] >= 16 or quick]
    return {"window_s": window, "seconds_per_run": seconds, "threads": threads, "rows": rows,
            "repeats": repeats, "streams_held": held,
            "held_in_every_repeat": all(r["keeps_up"] for r in at_held),
            "at_held": {key: spread([r[key] for r in at_held], 3) for key in keys}
            if at_held else {},
            # the GIL bound: the main thread does the front end, ORT and scoring of every
            # stream, so one process holds at most one core's worth of it
            "main_thread_bound_streams": int(1e3 / float(np.median(costs))) if costs else None,
            "profile": profile}


def processes_per_core(paths: dict[str, Path], start: int, threads: int, processes: int,
                       quick: bool) -> dict:
    """The layout that uses every core: ``processes`` daemons side by side, each with
    1/processes of the streams (disjoint stream lists, as two ``asd-edge run --config`` with
    their own node names would run), total N doubled from ``start`` until one falls behind."""
    from concurrent.futures import ThreadPoolExecutor

    window, seconds = (2.0, 4.0) if quick else (10.0, 25.0)
    rows = []
    total = start
    while total <= (2 * start if quick else 4096):
        share = max(1, total // processes)
        with ThreadPoolExecutor(processes) as pool:
            each = list(pool.map(lambda n: run_daemon(paths, n, seconds, threads, window),
                                 [share] * processes))
        row = {"streams": share * processes, "processes": processes,
               "keeps_up": all(keeps_up(r) for r in each),
               "latency_ms_p99": max(r["latency_ms_p99"] for r in each),
               "latency_ms_p50": float(np.median([r["latency_ms_p50"] for r in each])),
               "cpu_cores": round(sum(r["cpu_cores"] for r in each), 2),
               "rss_mib": round(sum(r["rss_mib"] for r in each), 1),
               "load_average": each[0]["load_average"]}
        rows.append(row)
        print("processes", json.dumps(row), flush=True)
        if not row["keeps_up"]:
            break
        total *= 2
    return {"processes": processes, "rows": rows,
            "streams_held": max((r["streams"] for r in rows if r["keeps_up"]), default=0)}


def larger_blocks(paths: dict[str, Path], start: int, threads: int,
                  block_seconds: float = 0.25) -> dict:
    """One process with ``block_seconds`` capture blocks (``source.block_seconds``, a config
    setting; 0.1 s by default): a quarter of the blocks, front-end calls and thread wake-ups
    per stream, for up to that much more hop latency. N doubled from ``start``."""
    rows = []
    n = start
    while n <= 4096:
        row = run_daemon(paths, n, 25.0, threads, block_seconds=block_seconds)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        print("blocks", json.dumps(row), flush=True)
        if not row["keeps_up"]:
            break
        n *= 2
    return {"block_seconds": block_seconds, "rows": rows,
            "streams_held": max((r["streams"] for r in rows if r["keeps_up"]), default=0)}


def profile_top(paths: dict[str, Path], streams: int, seconds: float, threads: int,
                work: Path, top: int = 12) -> list[dict]:
    """The main thread's functions by own time (cProfile) at ``streams`` streams."""
    import pstats

    out = work / f"profile-{streams}.prof"
    run_daemon(paths, streams, seconds, threads, profile=out)
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
             "own_s": round(v[2], 2), "own_share": round(v[2] / total, 3),
             "cumulative_s": round(v[3], 2), "streams": streams} for k, v in rows]


# -- against what a user would do instead ---------------------------------------------------------

def interleaved(functions: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, alternating between them (same load for each)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for fn in functions.values():
        fn()  # type: ignore[operator]
    for _ in range(repeats):
        for name, fn in functions.items():
            started = time.perf_counter()
            fn()  # type: ignore[operator]
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> dict:
    """Median and range of the per-repeat ratio slow / fast (pairs timed back to back)."""
    pairs = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
    return {slow + "_ms": spread(times[slow]), fast + "_ms": spread(times[fast]),
            "ratio": spread(pairs, 2)}


def onnx_vs_torch(paths: dict[str, Path], repeats: int) -> dict:
    """(a) Embedding one 10 s window's patches (16) and one hop's patch (1): ONNX Runtime (the
    edge's session) vs the trained PyTorch model in eager mode, one thread each."""
    import torch

    from edge.bundle.load import load_bundle
    from training.infer import load_run

    torch.set_num_threads(1)
    embedder = load_bundle(paths["models"], MACHINE, device="cpu", threads=1).system.embedder
    run = load_run(paths["run"])
    out = {}
    for patches_n in (1, 16):
        patches = np.random.default_rng(0).standard_normal(
            (patches_n, embedder.n_bins, embedder.patch_frames)).astype(np.float32)
        times = interleaved({"pytorch_eager": lambda p=patches: run.embed(p),
                             "onnxruntime": lambda p=patches: embedder.embed(p)}, repeats)
        out[f"{patches_n}_patches"] = ratio(times, "pytorch_eager", "onnxruntime")
    return {"threads": 1, "torch": torch.__version__, **out}


def incremental_vs_rescoring(paths: dict[str, Path], repeats: int, window: float,
                             blas_one_thread: bool = True) -> dict:
    """(b) One stream's hop: the daemon's incremental path (front end of the new audio, the new
    patch through ORT, the window scored) vs re-scoring the whole window from its waveform every
    hop (``ScoringSystem.assess_clip``: the whole front end and every patch again)."""
    from edge.audio import read_audio
    from edge.bundle.load import load_bundle
    from edge.streaming import hop_patches_for, window_patches_for

    system = load_bundle(paths["models"], MACHINE, device="cpu", threads=1).system
    audio = read_audio(paths["stream"])
    stream = system.stream(window_patches_for(window, system.front_end, system.patching),
                           hop_patches_for(0.5, system.front_end, system.patching))
    hop = int(HOP_SECONDS * 16000)
    span = int(window * 16000)
    position = span + hop  # fill the first window before timing
    new = stream.push(audio[:position])
    stream.accept(*system.run_patch_models(new).rows(slice(0, new.shape[0])))
    state = {"position": position}

    def incremental() -> None:
        at = state["position"]
        if at + hop > audio.shape[0]:
            at = span + hop
        patches = stream.push(audio[at:at + hop])
        for w in stream.accept(*system.run_patch_models(patches).rows(slice(0, len(patches)))):
            system.assess_window(w, 0)
        state["position"] = at + hop

    def rescoring() -> None:
        end = max(span, min(state["position"], audio.shape[0]))
        system.assess_clip(audio[end - span:end], 0)

    with blas_single_threaded() if blas_one_thread else contextlib.nullcontext():
        times = interleaved({"rescoring": rescoring, "incremental": incremental}, repeats)
    return {"window_s": window, "blas_threads": 1 if blas_one_thread else "all",
            **ratio(times, "rescoring", "incremental")}


def hnsw_vs_exact(sizes: list[int], queries: int, dim: int = 128) -> dict:
    """(c) Nearest-reference search, the edge's ``KnnBackend`` both ways: hnswlib (as the
    bundle builds it: M 16, ef_construction 200, ef 200) vs exact numpy search, on clustered
    unit vectors (a plant's operating states), queries near references; recall@1 against the
    exact answer."""
    from edge.scoring.backends import KnnBackend, KnnConfig

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        centres = rng.standard_normal((max(10, size // 100), dim)).astype(np.float32)
        refs = centres[rng.integers(0, len(centres), size)] + 0.3 * rng.standard_normal(
            (size, dim)).astype(np.float32)
        probe = refs[rng.integers(0, size, queries)] + 0.2 * rng.standard_normal(
            (queries, dim)).astype(np.float32)
        started = time.perf_counter()
        indexed = KnnBackend(KnnConfig(exact_below=0), refs)
        build_s = time.perf_counter() - started
        exact = KnnBackend(KnnConfig(exact_below=size + 1), refs)
        with blas_single_threaded():  # as the daemon searches
            times = interleaved({"exact": lambda q=probe[:1], e=exact: e.neighbours(q),
                                 "hnswlib": lambda q=probe[:1], i=indexed: i.neighbours(q)},
                                repeats=20)
        truth = exact.neighbours(probe)[0][:, 0]
        found = indexed.neighbours(probe)[0][:, 0]
        row = {"references": size, "dim": dim, "build_s": round(build_s, 2),
               "recall_at_1": round(float(np.mean(truth == found)), 4), "queries": queries,
               **ratio(times, "exact", "hnswlib")}
        rows.append(row)
        print("knn", json.dumps(row), flush=True)
    return {"rows": rows}


def daemon_vs_dcase_loop(bundle: dict[str, Path], recording: Path, clips_dir: Path,
                         repeats: int, clip_seconds: float, block_seconds: float = 0.1) -> dict:
    """(d) The daemon against the DCASE reference code's loop, on the same bundle and the same
    audio: ``recording`` cut into WAV clips of ``clip_seconds`` written to ``clips_dir``.

    - The DCASE loop, as the reference code scores a test set: for each clip file, read it,
      compute its front end (log-mel), run the trained PyTorch model (eager) on all its
      patches, score the clip: one score per clip. The scoring is the bundle's own (its
      members, references and ensemble: ``ScoringSystem.assess_clip`` with the PyTorch model
      as the embedder), so only the network's runtime and the cadence differ.
    - The daemon's path: the same files read and fed to one continuous stream in
      ``block_seconds`` blocks (the daemon's capture blocks), the new patches through ONNX
      Runtime, every ``clip_seconds`` window scored as it completes: one score per hop.

    One call of each passes over every clip; the calls alternate (``interleaved``). PyTorch,
    ONNX Runtime and numpy's BLAS on one thread each. Costs per second of audio and per
    score, and the pairs' ratios."""
    import dataclasses

    import torch

    from edge.audio import SAMPLE_RATE, read_audio, write_audio
    from edge.bundle.load import load_bundle
    from edge.streaming import hop_patches_for, window_patches_for
    from training.infer import load_run

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    system = load_bundle(bundle["models"], MACHINE, device="cpu", threads=1).system
    run = load_run(bundle["run"])
    if (run.front_end, run.patching) != (system.front_end, system.patching):
        raise RuntimeError(f"{bundle['run']} and {bundle['models']} cut patches differently")
    reference_loop = dataclasses.replace(system, embedder=run)  # same members, PyTorch network
    audio = read_audio(recording)
    span = int(round(clip_seconds * SAMPLE_RATE))
    clips = []
    for i in range(audio.shape[0] // span):
        clips.append(clips_dir / f"{MACHINE}_clip_{i:02d}.wav")
        write_audio(clips[-1], audio[i * span:(i + 1) * span])
    audio_seconds = len(clips) * clip_seconds
    window_patches = window_patches_for(clip_seconds, system.front_end, system.patching)
    hop_patches = hop_patches_for(0.5, system.front_end, system.patching)
    hop_seconds = (hop_patches * system.patching.patch_hop * system.front_end.hop_length
                   / system.front_end.sample_rate)
    stream = system.stream(window_patches, hop_patches)
    block = int(round(block_seconds * SAMPLE_RATE))
    scored: dict[str, list[int]] = {"daemon": [], "dcase_loop": []}  # scores of each pass

    def daemon() -> None:
        count = 0
        for path in clips:
            samples = read_audio(path)
            for at in range(0, samples.shape[0], block):
                patches = stream.push(samples[at:at + block])
                if patches.shape[0]:
                    ran = system.run_patch_models(patches).rows(slice(0, len(patches)))
                    for window in stream.accept(*ran):
                        system.assess_window(window, 0)
                        count += 1
        scored["daemon"].append(count)

    def dcase_loop() -> None:
        for path in clips:
            reference_loop.assess_clip(read_audio(path), 0)
        scored["dcase_loop"].append(len(clips))

    with blas_single_threaded():
        # the warm-up call of each (interleaved's) fills the stream's first window, so every
        # timed pass of the daemon is in the steady state: a score per hop
        times = interleaved({"dcase_loop": dcase_loop, "daemon": daemon}, repeats)
    scored = {name: counts[1:] for name, counts in scored.items()}  # without the warm-up
    per_score = {name: [t / n for t, n in zip(times[name], scored[name], strict=True)]
                 for name in times}
    score_ms = {name: spread(per_score[name]) for name in times}
    latency = {  # from a moment of audio to the first score of a window that holds it
        "dcase_loop_worst_s": round(clip_seconds + score_ms["dcase_loop"]["median"] / 1e3, 3),
        "daemon_worst_s": round(hop_seconds + block_seconds
                                + score_ms["daemon"]["median"] / 1e3, 3)}
    return {
        "clip_seconds": clip_seconds, "clips": len(clips), "audio_seconds": audio_seconds,
        "window_patches": window_patches, "hop_seconds": round(hop_seconds, 4),
        "block_seconds": block_seconds, "threads": 1, "torch": torch.__version__,
        "front_end": f"{system.front_end.n_bins}-bin "
        + ("log-mel" if system.front_end.n_mels else "log-linear"),
        "members": [m.name for m in system.members],
        "scores_per_pass": {name: spread(counts, 1) for name, counts in scored.items()},
        "scores_per_10_s": {name: round(float(np.mean(counts)) / audio_seconds * 10, 2)
                            for name, counts in scored.items()},
        "dcase_loop_ms_per_audio_s": spread([t / audio_seconds for t in times["dcase_loop"]]),
        "daemon_ms_per_audio_s": spread([t / audio_seconds for t in times["daemon"]]),
        "dcase_loop_ms_per_score": score_ms["dcase_loop"],
        "daemon_ms_per_score": score_ms["daemon"],
        # pairs timed back to back: the same audio, so the time ratio is the ratio per second
        "ratio_per_audio_second": spread(
            [a / b for a, b in zip(times["dcase_loop"], times["daemon"], strict=True)], 2),
        "ratio_per_score": spread(
            [a / b for a, b in zip(per_score["dcase_loop"], per_score["daemon"],
                                   strict=True)], 2),
        "latency": latency,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


# -- against the limit --------------------------------------------------------------------------

def against_limit(paths: dict[str, Path], peak: dict, held: int) -> dict:
    """The network's multiply-adds per stream-second (training's own count, kept in the
    checkpoint's model summary) x the streams held, against the measured peak."""
    import torch

    from edge.bundle.load import load_bundle

    system = load_bundle(paths["models"], MACHINE, device="cpu", threads=1).system
    patch_seconds = system.patching.patch_hop * system.front_end.hop_length / 16000
    summary = torch.load(paths["run"] / "checkpoint.pt", map_location="cpu",
                         weights_only=True)["model_summary"]
    macs = int(summary["multiply_adds_per_patch"])
    per_second = macs / patch_seconds
    useful = 2 * per_second * held / 1e9
    return {"macs_per_patch": macs, "parameters": summary.get("parameters"),
            "patches_per_audio_second": round(1 / patch_seconds, 3),
            "macs_per_audio_second": round(per_second), "streams": held,
            "useful_gflops": round(useful, 3), "peak_gflops": peak["gflops"]["median"],
            "fraction_of_peak": round(useful / peak["gflops"]["median"], 5)}


# -- footprint ------------------------------------------------------------------------------------

def folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def install_size(work: Path) -> dict:
    """A fresh venv with the edge extra only (no torch): ``pip install -c constraints.txt
    '.[cpu]'``, then the size of its site-packages."""
    venv = work / "install-venv"
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    started = time.monotonic()
    try:
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c",
                               str(ROOT / "constraints.txt"), f"{ROOT}[cpu]"],
                              capture_output=True, text=True, timeout=480)
    except (subprocess.SubprocessError, OSError) as err:
        return {"error": str(err)[:300]}
    if done.returncode:
        return {"error": done.stderr[-300:]}
    site = next(venv.glob("lib/python*/site-packages"))
    torch_there = (site / "torch").exists()
    sizes = sorted(((folder_mib(d), d.name) for d in site.iterdir() if d.is_dir()),
                   reverse=True)[:6]
    result = {"venv_mib": folder_mib(venv), "site_packages_mib": folder_mib(site),
              "torch_installed": torch_there, "largest": [f"{n} {m} MiB" for m, n in sizes],
              "install_s": round(time.monotonic() - started, 1)}
    subprocess.run(["rm", "-rf", str(venv)], check=False)
    return result


# -- fleet on one broker --------------------------------------------------------------------------

def hop_scores(paths: dict[str, Path]) -> np.ndarray:
    """Every hop's score of the recording through the daemon's incremental path."""
    from edge.audio import read_audio
    from edge.bundle.load import load_bundle
    from edge.streaming import hop_patches_for, window_patches_for

    system = load_bundle(paths["models"], MACHINE, device="cpu", threads=1).system
    stream = system.stream(window_patches_for(10.0, system.front_end, system.patching),
                           hop_patches_for(0.5, system.front_end, system.patching))
    patches = stream.push(read_audio(paths["stream"]))
    windows = stream.accept(*system.run_patch_models(patches).rows(slice(0, len(patches))))
    return np.array([system.assess_window(w, 0).score for w in windows])


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fleet(paths: dict[str, Path], work: Path, nodes: int, seconds: float,
          outage: tuple[float, float]) -> dict:
    """``nodes`` daemon processes (``asd-edge run --config``, one file stream each, the
    recording with its fault) publishing to one Mosquitto on loopback, which is stopped at
    ``outage[0]`` s and started again at ``outage[1]`` s; a QoS 1 subscriber with a persistent
    session counts the events delivered (unique ids) against the events the daemons raised
    (their journals). The outage times count from when every daemon has logged that it is
    listening. The alarm threshold is set to the recording's 70th-percentile hop score,
    so that every node raises and clears episodes during the run."""
    import paho.mqtt.client as mqtt
    import yaml
    from paho.mqtt.enums import CallbackAPIVersion

    sys.path.insert(0, str(ROOT))
    from edge.outputs.journal import read_journal
    from tests._broker import Broker  # the tests' restartable Mosquitto on loopback

    folder = work / "fleet"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    threshold = float(np.percentile(hop_scores(paths), 70))
    broker = Broker(folder / "broker")
    broker.start()
    delivered: dict[str, dict] = {}
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet-viewer",
                         clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe("asd-edge/+/+/+/alarm", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: delivered.setdefault(
        json.loads(m.payload)["event_id"], json.loads(m.payload))
    client.reconnect_delay_set(0.1, 1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    subscribed.wait(5)
    processes = []
    for i in range(nodes):
        node = folder / f"node{i:02d}"
        node.mkdir()
        (node / "edge.yaml").write_text(yaml.safe_dump({
            "node": f"fleet-{i:02d}", "models_dir": str(paths["models"]), "device": "cpu",
            "threads": 1, "state_dir": str(node / "state"),
            "streams": [{"machine": MACHINE, "section": 0,
                         "alarm": {"threshold": threshold},
                         "source": {"type": "file", "path": str(paths["stream"]),
                                    "speed": "realtime"}}],
            "mqtt": {"url": broker.url}, "metrics": {"enabled": False},
            "evidence": {"enabled": False}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(node / "edge.yaml"),
             "--max-seconds", str(seconds)], cwd=node, stdout=subprocess.DEVNULL,
            stderr=(node / "log.txt").open("w"), env={**os.environ, "PYTHONPATH": str(ROOT)}))
    started = time.monotonic()
    broker_cpu: dict[int, float] = {}
    restarted = False
    down_utc = up_utc = float("inf")
    assert broker.process is not None
    ready_at = None  # when every daemon has started listening (20 start-ups take a while)
    logs = [folder / f"node{i:02d}" / "log.txt" for i in range(nodes)]
    while any(p.poll() is None for p in processes):
        assert broker.process is not None
        if (cpu := proc_cpu_s(broker.process.pid)) is not None:
            broker_cpu[broker.process.pid] = cpu
        if ready_at is None:
            if all("listening" in log.read_text() for log in logs if log.is_file()):
                ready_at = time.monotonic()
            time.sleep(0.2)
            continue
        elapsed = time.monotonic() - ready_at
        if not restarted and elapsed >= outage[0] and broker.process.poll() is None:
            broker.stop()  # SIGTERM: mosquitto saves its sessions
            down_utc = time.time()
        if not restarted and elapsed >= outage[1]:
            broker.start()
            up_utc = time.time()
            restarted = True
        time.sleep(0.2)
    wall = time.monotonic() - started
    deadline = time.monotonic() + 15
    raised = {}
    for i in range(nodes):
        journal = folder / f"node{i:02d}" / "state" / "journal.jsonl"
        if journal.is_file():
            raised.update((e.event_id, e) for e in read_journal(journal))
    while time.monotonic() < deadline and not set(raised) <= set(delivered):
        time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    broker.stop()
    missing = sorted(set(raised) - set(delivered))
    during = [e for e in raised.values() if down_utc <= e.time.timestamp() <= up_utc]
    return {"nodes": nodes, "audio_s_per_node": seconds, "wall_s": round(wall, 1),
            "start_up_s": round((ready_at or started) - started, 1),
            "broker_down_s": list(outage), "threshold": round(threshold, 4),
            "events_raised": len(raised),
            "raises": sum(e.type == "raise" for e in raised.values()),
            "clears": sum(e.type == "clear" for e in raised.values()),
            "events_delivered": len(set(raised) & set(delivered)),
            "raised_while_broker_down": len(during),
            "delivered_of_those": sum(e.event_id in delivered for e in during),
            "missing": missing[:10],
            "broker_cpu_s": round(sum(broker_cpu.values()), 2),
            "broker_cpu_share_of_a_core": round(sum(broker_cpu.values()) / wall, 4),
            "daemon_exit_codes": sorted({p.returncode for p in processes})}


# -- the suite ------------------------------------------------------------------------------------

PARTS = ("streams", "processes", "blocks", "onnx_vs_torch", "incremental", "knn", "dcase_loop",
         "limit", "footprint", "fleet", "install")


def run_suite(args: argparse.Namespace, save) -> dict:
    quick = args.quick
    work = Path(args.work)
    parts = set(args.only.split(",")) if args.only else set(PARTS) - (
        {"processes", "blocks", "onnx_vs_torch", "limit", "fleet", "install"} if quick
        else set())
    if unknown := parts - set(PARTS):
        raise SystemExit(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    paths = prepare(work, quick)
    previous = json.loads(Path(args.results_path).read_text()) if (
        args.only and Path(args.results_path).is_file()) else {}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict = {**previous, "machine": previous.get("machine") or machine_description(),
                     "quick": quick, "started_utc": previous.get("started_utc", now),
                     "bundle": {"path": str(paths["models"] / MACHINE),
                                "members": _members(paths)}}
    def part(name: str, compute) -> None:
        """One part; a failure is recorded, not fatal; the results so far are saved."""
        started = time.monotonic()
        try:
            results[name] = compute()
        except Exception as err:  # noqa: BLE001 - the report says which part failed and why
            results[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        results.setdefault("part_seconds", {})[name] = round(time.monotonic() - started, 1)
        print(name, json.dumps(results[name])[:400], flush=True)
        save(results)

    if "peak" not in results or not args.only:
        results["peak"] = peak_gflops(3 if quick else 7, 512 if quick else 2048)
        print("peak", json.dumps(results["peak"]), flush=True)
    repeats = 5 if quick else 30
    if "streams" in parts:
        part("streams", lambda: streams_per_box(paths, quick, args.threads, work))
    if "processes" in parts:
        held = (results.get("streams") or {}).get("streams_held") or 1
        part("processes", lambda: processes_per_core(paths, held, args.threads,
                                                     len(os.sched_getaffinity(0)), quick))
    if "blocks" in parts:
        held = (results.get("streams") or {}).get("streams_held") or 1
        part("blocks", lambda: larger_blocks(paths, held, args.threads))
    if "onnx_vs_torch" in parts:
        part("onnx_vs_torch", lambda: onnx_vs_torch(paths, repeats))
    if "incremental" in parts:
        part("incremental", lambda: incremental_vs_rescoring(paths, repeats,
                                                             2.0 if quick else 10.0))
        # the same hop with numpy's BLAS on every core, as before the daemon limited it
        part("incremental_blas_threads", lambda: incremental_vs_rescoring(
            paths, repeats, 2.0 if quick else 10.0, blas_one_thread=False))
    if "knn" in parts:
        sizes = ([int(x) for x in args.knn_sizes.split(",")] if args.knn_sizes
                 else [1000] if quick else [1000, 10_000, 100_000])
        part("knn", lambda: hnsw_vs_exact(sizes, 100 if quick else 1000))
    if "dcase_loop" in parts:
        part("dcase_loop", lambda: daemon_vs_dcase_loop(
            prepare_torch(paths, quick), paths["stream"], paths["data"].parent / "clips",
            repeats, 3.0 if quick else 10.0))
    if "limit" in parts:
        held = results.get("streams", {}).get("streams_held") or 1
        part("limit", lambda: against_limit(paths, results["peak"], held))
    if "footprint" in parts:
        part("footprint", lambda: {"bundle_mib": folder_mib(paths["models"] / MACHINE)})
    if "fleet" in parts:
        part("fleet", lambda: fleet(paths, work, 20, 60.0, (15.0, 40.0)))
    if "install" in parts:
        part("install", lambda: install_size(work))
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if previous:  # --only: say which parts are of a later run
        results.setdefault("reruns", []).append(f"{','.join(sorted(parts))} at {now}")
    else:
        results["finished_utc"] = finished
    save(results)
    return results


def _members(paths: dict[str, Path]) -> list[str]:
    manifest = json.loads((paths["models"] / MACHINE / "bundle.json").read_text())
    members = manifest.get("members") or manifest.get("system", {}).get("members") or []
    return [m.get("name", "?") if isinstance(m, dict) else str(m) for m in members]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size of every part")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "asd-edge-bench"),
                        help="bundle and recordings, built once and reused")
    parser.add_argument("--out", help="the report (default docs/BENCHMARKS.md; with --quick "
                                      "none unless given)")
    parser.add_argument("--results", help="raw figures, JSON (default "
                                          "bench/results/daemon[-quick].json)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)} (run "
                                       "again into the results file, the others kept)")
    parser.add_argument("--knn-sizes", help="index sizes of the search comparison (default "
                                            "1000,10000,100000; a million takes minutes)")
    parser.add_argument("--render", help="only render the report from this results JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--block-seconds", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        out = Path(args.results) if args.results else RESULTS / (
            "daemon-quick.json" if args.quick else "daemon.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        args.results_path = out  # --only: the other parts' figures are kept from it
        results = run_suite(args, lambda r: out.write_text(json.dumps(r, indent=2) + "\n"))
        print(f"results -> {out}")
    report = Path(args.out) if args.out else (None if args.quick and not args.render
                                              else ROOT / "docs" / "BENCHMARKS.md")
    if report is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from report import render  # bench/report.py

        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render(results))
        print(f"report -> {report}")


if __name__ == "__main__":
    main()
