"""``asd-edge demo``: the whole pipeline on what ships with the project, in a few minutes.

synth (a small data set of one machine type) -> train -> export (the network and the
modulation detector as one ensemble) -> enroll 12 minutes of the unit's own healthy
sound (its alarm threshold, one false alarm a month) -> bundle verify -> synth a
recording with a fault -> the daemon replays it -> alarms arrive over MQTT (a Mosquitto broker
started for the demo when the binary is installed) or in the local journal, and on the web page
(127.0.0.1, its URL printed; ``--keep-web SECONDS`` keeps it up after the replay). Each step is
the command a user would run, printed before it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from edge.errors import BadInput, RuntimeFailure

DEMO_SYSTEM = "embedding+modulation"  # what the demo exports (docs/ALARMS.md)
ENROLL_SECONDS = 720  # healthy sound of the demo's unit enrolled on site (asd-edge enroll)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", help="working folder (default demo-out)")
    parser.add_argument("--machine", default="gearbox", help="machine type to demonstrate")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--train", type=int, default=40, help="normal clips per section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", choices=("max", "realtime"), default="max",
                        help="replay pace of the faulty recording")
    parser.add_argument("--no-broker", action="store_true",
                        help="do not start Mosquitto: alarms go to the journal only")
    parser.add_argument("--web", type=int, default=0, metavar="PORT",
                        help="serve the web page on 127.0.0.1:PORT while the daemon runs "
                             "(default: a free port; its URL is printed)")
    parser.add_argument("--no-web", action="store_true", help="no web page")
    parser.add_argument("--keep-web", type=float, default=0.0, metavar="SECONDS",
                        help="keep the web page up this many seconds after the replay, to "
                             "look at the alarm (Ctrl-C ends it sooner; default 0)")


def _step(argv: list[str]) -> None:
    from edge.cli import main

    print(f"\n$ asd-edge {' '.join(argv)}", flush=True)
    code = main(argv)
    if code:
        raise RuntimeFailure(f"demo step 'asd-edge {argv[0]}' failed with exit status {code}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(folder: Path) -> tuple[subprocess.Popen, int] | None:
    """A Mosquitto on a free loopback port, or None when the binary is not installed."""
    binary = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if binary is None:
        return None
    port = _free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


def subscribe(port: int, seen: list[dict], ready: threading.Event, page: str | None = None):
    """Print every alarm event published on the broker as it arrives (with its episode's web
    page under ``page``, the page's base URL, when it is served)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def on_connect(client, _userdata, _flags, reason_code, _properties=None):
        if not reason_code.is_failure:
            client.subscribe("asd-edge/+/+/+/alarm", qos=1)

    def on_subscribe(*_args):
        ready.set()

    def on_message(_client, _userdata, message):
        event = json.loads(message.payload)
        seen.append(event)
        window = event["window"]
        print(f"  MQTT {message.topic}: {event['type'].upper()} score {event['score']:.3f} "
              f"(threshold {event['threshold']:.3f}) window {window['start_s']:.1f}-"
              f"{window['end_s']:.1f} s, driver {event['explanation'].get('driver')}, "
              f"clip {Path(event['clip']).name if event['clip'] else '-'}", flush=True)
        if page is not None and event["type"] == "raise":
            print(f"  web page of the episode: {page}/episodes/{event['id']}", flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="asd-edge-demo-viewer")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, \
        on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:  # the edge itself never imports torch
        raise BadInput("the demo trains a model: install the train extra "
                       "(pip install -c constraints.txt -e '.[cpu,train]')")
    if args.keep_web < 0 or (args.keep_web and args.no_web):
        raise BadInput(f"--keep-web {args.keep_web:g}: give the seconds to keep the web page "
                       "(and leave out --no-web)")
    out = Path(args.out)
    data, run_dir, models = out / "data", out / "run", out / "models"
    state, stream = out / "state", out / "stream" / f"{args.machine}_fault.wav"
    site = out / "site" / f"{args.machine}_healthy.wav"
    for folder in (data, run_dir, models, state, stream.parent, site.parent):
        shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    _step(["synth", str(data), "--machines", args.machine, "--sections", "2",
           "--train", str(args.train), "--target-train", "6", "--test", "8",
           "--seed", str(args.seed)])
    _step(["train", "--data", str(data), "--machines", args.machine, "--out", str(run_dir),
           "--epochs", str(args.epochs), "--seed", str(args.seed)])
    # A site chooses per machine type with 'asd-edge select' on a development split; the
    # demo's 8 test clips per group are too few for that choice to be trusted (it flips with
    # the seed), so the demo ships a choice fixed in advance: the standardised ensemble of the
    # network and the modulation detector, the ensemble that kept a gearbox's promise and
    # caught 3 of its 4 faults on the 10-hour plant-life set (docs/ALARMS.md, session 10).
    _step(["export", "--run", str(run_dir), "--machine", args.machine, "--data", str(data),
           "--out", str(models), "--system", DEMO_SYSTEM])
    # On site, the unit's own healthy sound sets its alarm threshold: the bundle's data-set
    # clips (other units, every operating condition) promise no false alarms only with a
    # threshold far above this unit's faults (docs/ALARMS.md). 12 minutes of it, enrolled.
    _step(["synth", str(site), "--stream", "--machine", args.machine, "--section", "0",
           "--seconds", str(ENROLL_SECONDS), "--no-fault", "--take", "1",
           "--seed", str(args.seed)])
    _step(["enroll", "--file", str(site), "--machine", args.machine, "--section", "0",
           "--models", str(models)])
    _step(["bundle", "verify", str(models / args.machine)])
    _step(["synth", str(stream), "--stream", "--machine", args.machine, "--section", "0",
           "--seconds", "80", "--fault-start", "35", "--fault-seconds", "20",
           "--fault-severity", "1.5", "--seed", str(args.seed)])
    fault = json.loads(stream.with_suffix(".json").read_text())["fault"]

    broker = None if args.no_broker else start_broker(Path(tempfile.mkdtemp(prefix="asd-demo-")))
    seen: list[dict] = []
    viewer = None
    run_argv = ["run", "--file", str(stream), "--machine", args.machine, "--models",
                str(models), "--speed", args.speed, "--state-dir", str(state), "--node",
                "demo", "--no-metrics"]
    page = None if args.no_web else f"http://127.0.0.1:{args.web or _free_port()}"
    if page is not None:
        run_argv += ["--web", page.removeprefix("http://")]
        if args.keep_web:
            run_argv += ["--keep-web", f"{args.keep_web:g}"]
        print(f"\nthe web page shows the stream and its alarm at {page}/ while the daemon "
              "runs" + ("" if args.keep_web else
                        " (asd-edge demo --keep-web 600 keeps it up after the replay)"))
    try:
        if broker is not None:
            ready = threading.Event()
            viewer = subscribe(broker[1], seen, ready, page)
            ready.wait(5)
            run_argv += ["--mqtt", f"mqtt://127.0.0.1:{broker[1]}"]
            print(f"\nMosquitto on 127.0.0.1:{broker[1]}; alarms as they arrive:")
        else:
            print("\nno Mosquitto here: alarms go to the journal")
        _step(run_argv)
        time.sleep(0.5)
    finally:
        if viewer is not None:
            viewer.loop_stop()
            viewer.disconnect()
        if broker is not None:
            broker[0].terminate()
            broker[0].wait(5)
    from edge.outputs.journal import read_journal

    events = read_journal(state / "journal.jsonl")
    print(f"\nthe recording has a {fault['kind']} fault from {fault['start_s']:.0f} s to "
          f"{fault['end_s']:.0f} s; the daemon sent {len(events)} event(s):")
    for event in events:
        window = event.window
        print(f"  {event.type:<5} at window {window.start_s:.1f}-{window.end_s:.1f} s, "
              f"score {event.score:.3f} (threshold {event.threshold:.3f}), id {event.id}")
        if page is not None and event.type == "raise":
            print(f"        its page (served while the daemon ran): {page}/episodes/{event.id}")
    print(event_level_summary(stream.parent, models, args.machine, out / "streams-report"))
    print(f"\ndemo done in {time.monotonic() - started:.0f} s; everything is under {out}/")
    return 0


def event_level_summary(streams: Path, models: Path, machine: str, report: Path) -> str:
    """What a plant judges the shipped bundle by: its false-alarm promise, and the event-level
    result of the demo's recording replayed through the daemon (``evaluate-streams``)."""
    from edge.bundle.calibrate import describe
    from edge.bundle.load import load_bundle
    from edge.evaluation.streams import evaluate_streams

    bundle = load_bundle(models, machine)
    lines = ["\nwhat the bundle promises (asd-edge bundle verify):"]
    for section, levels in sorted(bundle.system.thresholds.items()):
        promise = describe(levels)
        lines.append(f"  section_{section:02d}: " + (
            f"at most {promise['false_alarms_per_day']:.3g} false alarms per day "
            f"({promise['confidence']:.0%} confidence), on {promise['audio_minutes']:.1f} min "
            f"of normal audio ({promise['on']})" if promise else
            "no false-alarm promise: clip-quantile threshold (docs/ALARMS.md)"))
    total = evaluate_streams(streams, models, report, plots=True)["summary"]["total"]
    delay = (f", delay {total['delay_median_s']:.1f} s" if total["delay_median_s"] is not None
             else "")
    lines.append(f"event-level result of the recording (asd-edge evaluate-streams): faults "
                 f"detected {total['detected']}/{total['faults']}{delay}, "
                 f"{total['false_alarms']} false alarm(s) in {60 * total['normal_hours']:.1f} "
                 f"min of normal audio, {total['normal_time_in_alarm']:.0%} of it in alarm; "
                 f"report {report}/results.md")
    return "\n".join(lines)
