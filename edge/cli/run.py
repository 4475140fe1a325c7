"""``asd-edge run``: the daemon, for one stream from flags or many from a YAML config.

    asd-edge run --mic 0 --machine gearbox [--section 0] [--models models] [--mqtt mqtt://host]
    asd-edge run --file rec.wav --machine gearbox --speed max
    asd-edge run --file rec.wav --machine gearbox --web 8090 --keep-web 600   # look at it after
    asd-edge run --config edge.yaml [--models M] [--node N] [--mqtt URL] [--speed max] ...

With ``--config`` the file names the streams; a flag that maps to one setting of the file wins
over it (``edge.config.override_config``, docs/EDGE.md "Flags and the config file"), and the
flags that name a stream (--mic, --file, --machine, --section) are an error.

SIGTERM and SIGINT stop it cleanly: capture stops, pending clips are written, the outbox is
flushed as far as the broker allows and the status goes ``offline``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from pydantic import ValidationError

from edge.config import EdgeConfig, config_from_flags, load_config, override_config
from edge.errors import BadInput

logger = logging.getLogger(__name__)

# The flags that name the one stream of a run without --config; a config names its streams
# itself: (argument, flag, the key of a stream entry in the config that says it instead).
STREAM_FLAGS = (("mic", "--mic", "source: {type: mic, device: ...}"),
                ("file", "--file", "source: {type: file, path: ...}"),
                ("machine", "--machine", "machine:"), ("section", "--section", "section:"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One of --mic, --file and --config: checked in options_from, for a one-line error.
    parser.add_argument("--mic", help="input device: index or (part of) its name "
                                      "('asd-edge devices' lists them)")
    parser.add_argument("--file", help="replay a WAV/FLAC recording")
    parser.add_argument("--config", help="YAML config: many microphones and machines; the "
                                         "flags below that it also sets override it")
    parser.add_argument("--machine", help="machine type (a bundle folder in --models)")
    parser.add_argument("--section", help="the unit's section (0 or section_00; default 0)")
    parser.add_argument("--models", help="folder of bundles (default: models)")
    parser.add_argument("--mqtt", help="broker URL mqtt://HOST:PORT or mqtts://HOST:PORT; "
                                       "without it events go to the local journal only")
    parser.add_argument("--mqtt-username", help="broker user name")
    parser.add_argument("--mqtt-password-env", help="environment variable holding the password")
    parser.add_argument("--mqtt-password-file", help="file holding the password")
    parser.add_argument("--mqtt-ca", metavar="FILE",
                        help="CA certificate(s), PEM, that signed the broker's certificate "
                             "(mqtts:// only; default: the system's trusted CAs)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="ONNX Runtime device (default auto); cuda fails if CUDA is "
                             "unusable")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads")
    parser.add_argument("--speed", choices=("realtime", "max"),
                        help="replay pace of --file (default realtime), or of every file "
                             "source of --config")
    parser.add_argument("--node", help="this box's name in topics (default: host name)")
    parser.add_argument("--state-dir", help="outbox, journal and clips (default: state)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free one)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve metrics")
    parser.add_argument("--web", metavar="[HOST:]PORT",
                        help="serve the operator's web page (default host 127.0.0.1; another "
                             "host needs web.password_env/password_file in --config)")
    parser.add_argument("--keep-web", type=float, default=0.0, metavar="SECONDS",
                        help="when the --file replay ends, keep serving the web page this "
                             "many seconds to look at its alarms (Ctrl-C ends it sooner)")
    parser.add_argument("--max-seconds", type=float,
                        help="stop each stream after this many seconds of audio")


def options_from(args: argparse.Namespace) -> EdgeConfig:
    """The config of a run: the one stream of the flags, or the file of ``--config`` with
    the flags given over it (a flag wins over the file; see the module docstring)."""
    metrics = {"metrics_port": args.metrics_port, "no_metrics": args.no_metrics}
    if args.config:
        for name, flag, key in STREAM_FLAGS:
            if getattr(args, name) is not None:
                raise BadInput(f"{flag} does not go with --config, whose streams say it "
                               f"themselves: set {key} in the stream's entry of the config, "
                               "or run without --config")
        return override_config(
            load_config(args.config), models=args.models, node=args.node,
            state_dir=args.state_dir, device=args.device, threads=args.threads,
            mqtt=args.mqtt, mqtt_username=args.mqtt_username,
            mqtt_password_env=args.mqtt_password_env,
            mqtt_password_file=args.mqtt_password_file, mqtt_ca=args.mqtt_ca,
            speed=args.speed, **metrics)
    if args.mic is None and args.file is None:
        raise BadInput("give one of --mic DEVICE, --file WAV and --config YAML")
    if not args.machine:
        raise BadInput("--machine is required with --mic or --file (e.g. --machine "
                       "gearbox)")
    if args.speed is not None and args.file is None:
        raise BadInput("--speed paces a --file replay; a microphone runs in real time: drop "
                       "--speed")
    config = config_from_flags(
        machine=args.machine, mic=_device(args.mic), file=args.file,
        section=args.section if args.section is not None else 0, models=args.models,
        mqtt=args.mqtt, device=args.device or "auto", speed=args.speed or "realtime",
        node=args.node, state_dir=args.state_dir, mqtt_username=args.mqtt_username,
        mqtt_password_env=args.mqtt_password_env,
        mqtt_password_file=args.mqtt_password_file, mqtt_ca=args.mqtt_ca,
        threads=args.threads)
    return override_config(config, **metrics)


def with_web(config: EdgeConfig, web: str | None) -> EdgeConfig:
    """``config`` with the web page on at ``[HOST:]PORT`` (the ``--web`` flag), if given."""
    if web is None:
        return config
    host, _, port = web.rpartition(":")
    if not port.isdigit():
        raise BadInput(f"--web {web}: give [HOST:]PORT, e.g. --web 8090 or --web 0.0.0.0:8090")
    data = config.model_dump()
    data["web"].update(enabled=True, port=int(port), **({"host": host} if host else {}))
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as err:
        raise BadInput(f"--web {web}: {err.errors()[0]['msg']}") from err


def _device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def build_outputs(config: EdgeConfig, commands: dict[str, Any] | None = None):
    """MQTT when configured, then the journal always (a local record of every event).

    MQTT first: its durable outbox has an event before the journal does, so a daemon killed
    between the two still delivers it (the next start journals it, ``Daemon.start``).
    ``commands``: the MQTT command handlers (``MqttOutput``), when the config allows them."""
    from edge.outputs import FanOut, Output
    from edge.outputs.journal import Journal

    outputs: list[Output] = []
    if config.mqtt is not None:
        from edge.outputs.mqtt import MqttOutput

        mqtt = MqttOutput(config.mqtt, config.node, config.state_dir,
                          outbox_path=config.outbox_path, max_rows=config.outbox.max_events,
                          commands=commands)
        mqtt.start()
        outputs.append(mqtt)
    outputs.append(Journal(config.state_dir / "journal.jsonl"))
    return FanOut(outputs)


def run(args: argparse.Namespace) -> int:
    from edge.daemon import Daemon
    from edge.feedback import NotAFaultCommand
    from edge.health import Health, Heartbeat, MetricsServer

    config = with_web(options_from(args), args.web)
    if args.keep_web < 0 or (args.keep_web and not config.web.enabled):
        raise BadInput(f"--keep-web {args.keep_web:g}: give the seconds to keep the web page "
                       "after the replay, with the page on (--web PORT or web: in --config)")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    health = Health(config.node, mqtt_configured=config.mqtt is not None)
    daemon = Daemon(config, health=health, stop=stop, max_seconds=args.max_seconds)
    # metrics first: a port in use is a BadInput before anything connects
    server = MetricsServer(health, config.metrics.host, config.metrics.port).start() \
        if config.metrics.enabled else None
    commands = None
    if config.feedback.mqtt:
        if config.mqtt is None:
            logger.warning("feedback.mqtt is on but there is no broker (mqtt:, --mqtt): no "
                           "not_a_fault commands can arrive")
        commands = {"not_a_fault": daemon.feedback_command}
    # after the bundles loaded: a bad one stops us first
    outputs = build_outputs(config, commands)
    web = None
    if config.web.enabled:
        from edge.web.server import WebServer
        from edge.web.state import WebState

        state = WebState([(r.name, r.key.machine, r.key.section, *r.rule.levels(None))
                          for r in daemon.runners], config.state_dir / "actions.jsonl",
                         config.state_dir / "journal.jsonl")
        web = WebServer(state, health, config.web.host, config.web.port,
                        config.web.resolve_password(), config.web.public_url,
                        feedback=lambda episode, reply: daemon.request_feedback(
                            NotAFaultCommand(episode=episode), "web", reply),
                        bundles=daemon.bundles).start()
        daemon.score_listener = state.add_score
        daemon.clip_links = web.links
        daemon.feedback_listener = lambda record: state.add_feedback(
            record.model_dump(mode="json"))
        outputs.outputs.append(state)
        print(f"web page: {web.url}/", flush=True)
    heartbeat = Heartbeat(health, config.metrics.heartbeat_seconds).start()

    signalled = threading.Event()  # ``stop`` is also set by the daemon when its sources end

    def on_signal(signum: int, _frame) -> None:
        logger.info("signal %d: stopping", signum)
        signalled.set()
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.run(outputs)
        if web is not None and args.keep_web > 0 and not signalled.is_set():
            print(f"the sources ended; the web page stays at {web.url}/ for "
                  f"{args.keep_web:g} s (Ctrl-C ends it)", flush=True)
            signalled.wait(args.keep_web)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        heartbeat.stop()
        outputs.close()
        if server is not None:
            server.stop()
        if web is not None:
            web.stop()
    print(f"asd-edge run: {daemon.windows_scored} windows scored, {daemon.events_sent} alarm "
          f"events; journal {config.state_dir / 'journal.jsonl'}")
    return 0
