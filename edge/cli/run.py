"""``asd-edge run``: the daemon, for one stream from flags or many from a YAML config.

    asd-edge run --mic 0 --machine gearbox [--section 0] [--models models] [--mqtt mqtt://host]
    asd-edge run --file rec.wav --machine gearbox --speed max
    asd-edge run --config edge.yaml

SIGTERM and SIGINT stop it cleanly: capture stops, pending clips are written, the outbox is
flushed as far as the broker allows and the status goes ``offline``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from edge.config import EdgeConfig, config_from_flags, load_config
from edge.errors import BadInput

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mic", help="input device: index or (part of) its name "
                                      "('asd-edge devices' lists them)")
    source.add_argument("--file", help="replay a WAV/FLAC recording")
    source.add_argument("--config", help="YAML config: many microphones and machines")
    parser.add_argument("--machine", help="machine type (a bundle folder in --models)")
    parser.add_argument("--section", default="0", help="the unit's section (0 or section_00)")
    parser.add_argument("--models", help="folder of bundles (default: models)")
    parser.add_argument("--mqtt", help="broker URL mqtt://HOST:PORT or mqtts://HOST:PORT; "
                                       "without it events go to the local journal only")
    parser.add_argument("--mqtt-username", help="broker user name")
    parser.add_argument("--mqtt-password-env", help="environment variable holding the password")
    parser.add_argument("--mqtt-password-file", help="file holding the password")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="ONNX Runtime device; cuda fails if CUDA is unusable")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads")
    parser.add_argument("--speed", default="realtime", choices=("realtime", "max"),
                        help="--file replay pace")
    parser.add_argument("--node", help="this box's name in topics (default: host name)")
    parser.add_argument("--state-dir", help="outbox, journal and clips (default: state)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free one)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve metrics")
    parser.add_argument("--max-seconds", type=float,
                        help="stop each stream after this many seconds of audio")


def config_from_args(args: argparse.Namespace) -> EdgeConfig:
    if args.config:
        config = load_config(args.config)
    else:
        if not args.machine:
            raise BadInput("--machine is required with --mic or --file (e.g. --machine "
                           "gearbox)")
        config = config_from_flags(
            machine=args.machine, mic=_device(args.mic), file=args.file, section=args.section,
            models=args.models, mqtt=args.mqtt, device=args.device, speed=args.speed,
            node=args.node, state_dir=args.state_dir, mqtt_username=args.mqtt_username,
            mqtt_password_env=args.mqtt_password_env,
            mqtt_password_file=args.mqtt_password_file, threads=args.threads)
    updates = {}
    if args.metrics_port is not None or args.no_metrics:
        metrics = config.metrics.model_copy(update={
            k: v for k, v in (("port", args.metrics_port), ("enabled", not args.no_metrics))
            if v is not None})
        updates["metrics"] = metrics
    return config.model_copy(update=updates) if updates else config


def _device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def build_outputs(config: EdgeConfig):
    """The journal always (a local record of every event), MQTT when configured."""
    from edge.outputs import FanOut, Output
    from edge.outputs.journal import Journal

    outputs: list[Output] = [Journal(config.state_dir / "journal.jsonl")]
    if config.mqtt is not None:
        from edge.outputs.mqtt import MqttOutput

        mqtt = MqttOutput(config.mqtt, config.node, config.state_dir,
                          outbox_path=config.outbox_path, max_rows=config.outbox.max_events)
        mqtt.start()
        outputs.append(mqtt)
    return FanOut(outputs)


def run(args: argparse.Namespace) -> int:
    from edge.daemon import Daemon
    from edge.health import Health, Heartbeat, MetricsServer

    config = config_from_args(args)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    health = Health(config.node, mqtt_configured=config.mqtt is not None)
    daemon = Daemon(config, health=health, stop=stop, max_seconds=args.max_seconds)
    # metrics first: a port in use is a BadInput before anything connects
    server = MetricsServer(health, config.metrics.host, config.metrics.port).start() \
        if config.metrics.enabled else None
    outputs = build_outputs(config)  # after the bundles loaded: a bad one stops us first
    heartbeat = Heartbeat(health, config.metrics.heartbeat_seconds).start()

    def on_signal(signum: int, _frame) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.run(outputs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        heartbeat.stop()
        outputs.close()
        if server is not None:
            server.stop()
    print(f"asd-edge run: {daemon.windows_scored} windows scored, {daemon.events_sent} alarm "
          f"events; journal {config.state_dir / 'journal.jsonl'}")
    return 0
