"""Health of the daemon: Prometheus metrics on 127.0.0.1, and a heartbeat line in the log.

The metrics live in their own ``CollectorRegistry`` (not prometheus_client's global one), so
two daemons in one process (tests) or a library user never collide. ``Health`` is the one
object the daemon updates; it also keeps the latest numbers in plain Python for the heartbeat.

Metrics (all prefixed ``asd_edge_``)::

    hops_scored_total{stream}            counter    windows scored
    inference_seconds                    histogram  one batched ONNX Runtime call
    capture_overflows_total{stream}      counter    the device lost samples (PortAudio overflow)
    capture_dropped_blocks_total{stream} counter    our queue was full (scoring too slow)
    capture_device_errors_total{stream}  counter    device missing or lost (retried)
    score{stream}                        gauge      the latest anomaly score
    alarm_active{stream}                 gauge      1 while an alarm episode is open
    signal_ok{stream}                    gauge      1 while the audio is sound, 0 with no signal
    signal_lost_total{stream, reason}    counter    changes to no signal: silence, nan, stuck,
                                                    frozen, device_lost (edge.signal)
    signal_dropped_seconds_total{stream} counter    bad audio not scored (any reason but
                                                    device_lost)
    mqtt_connected                       gauge      1 while the broker connection is up
    outbox_depth                         gauge      events waiting for the broker's ack
    provider_info{provider, device}      info       the ONNX Runtime provider really in use
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from edge.errors import BadInput

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CAPTURE_COUNTERS = ("overflows", "dropped_blocks", "device_errors")


@dataclass
class _StreamNumbers:
    hops: int = 0
    score: float = float("nan")
    alarm: bool = False
    capture: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAPTURE_COUNTERS, 0))
    connected: bool = True  # the capture's device is open (CaptureStats.connected)
    signal: str = "ok"  # edge.signal: "ok", "no_signal" or "device_lost"
    signal_reason: str | None = None


class Health:
    """The daemon's metrics; thread-safe (prometheus_client's metrics are)."""

    def __init__(self, node: str = "", mqtt_configured: bool = True) -> None:
        self.node = node
        self.mqtt_configured = mqtt_configured
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.hops_scored = Counter("asd_edge_hops_scored", "Windows scored", ["stream"],
                                   registry=r)
        self.inference_seconds = Histogram("asd_edge_inference_seconds",
                                           "Seconds per ONNX Runtime call (one batch)",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.capture = {
            name: Counter(f"asd_edge_capture_{name}", help_text, ["stream"], registry=r)
            for name, help_text in (
                ("overflows", "Input overflows reported by the audio device"),
                ("dropped_blocks", "Audio blocks dropped because the queue was full"),
                ("device_errors", "Audio device missing or lost (retried with backoff)"))}
        self.score = Gauge("asd_edge_score", "Latest anomaly score", ["stream"], registry=r)
        self.alarm_active = Gauge("asd_edge_alarm_active", "1 while an alarm is open",
                                  ["stream"], registry=r)
        self.signal_ok = Gauge("asd_edge_signal_ok", "1 while the stream's audio is sound, "
                               "0 while it has no signal", ["stream"], registry=r)
        self.signal_lost = Counter("asd_edge_signal_lost", "Times the stream lost its signal, "
                                   "by reason", ["stream", "reason"], registry=r)
        self.signal_dropped = Counter("asd_edge_signal_dropped_seconds",
                                      "Seconds of bad audio (silence, NaN, stuck, frozen) "
                                      "not scored",
                                      ["stream"], registry=r)
        self.mqtt_connected = Gauge("asd_edge_mqtt_connected", "1 while connected to the broker",
                                    registry=r)
        self.outbox_depth = Gauge("asd_edge_outbox_depth", "Events waiting for the broker",
                                  registry=r)
        self.provider = Info("asd_edge_provider", "ONNX Runtime provider in use", registry=r)
        self._lock = threading.Lock()
        self._streams: dict[str, _StreamNumbers] = {}
        self._latency_sum = 0.0
        self._latency_count = 0
        self._provider_text = "unknown"
        self._mqtt = False
        self._outbox = 0

    def _numbers(self, stream: str) -> _StreamNumbers:
        return self._streams.setdefault(stream, _StreamNumbers())

    def add_stream(self, stream: str) -> None:
        """Make a stream's series exist (at 0) before its first hop, so scrapes see it."""
        with self._lock:
            self._numbers(stream)
        self.hops_scored.labels(stream=stream)
        for counter in self.capture.values():
            counter.labels(stream=stream)
        self.alarm_active.labels(stream=stream).set(0)
        self.signal_ok.labels(stream=stream).set(1)
        self.signal_dropped.labels(stream=stream)

    def hop_scored(self, stream: str, score: float) -> None:
        self.hops_scored.labels(stream=stream).inc()
        self.score.labels(stream=stream).set(score)
        with self._lock:
            numbers = self._numbers(stream)
            numbers.hops += 1
            numbers.score = float(score)

    def inference(self, seconds: float) -> None:
        """One ONNX Runtime call (a batch over streams) took ``seconds``."""
        self.inference_seconds.observe(seconds)
        with self._lock:
            self._latency_sum += seconds
            self._latency_count += 1

    def set_alarm(self, stream: str, active: bool) -> None:
        self.alarm_active.labels(stream=stream).set(1 if active else 0)
        with self._lock:
            self._numbers(stream).alarm = active

    def set_signal(self, stream: str, ok: bool, reason: str | None) -> None:
        """A change of the stream's signal state (``edge.signal``)."""
        self.signal_ok.labels(stream=stream).set(1 if ok else 0)
        if not ok:
            self.signal_lost.labels(stream=stream, reason=reason or "unknown").inc()
        with self._lock:
            numbers = self._numbers(stream)
            numbers.signal = "ok" if ok else (
                "device_lost" if reason == "device_lost" else "no_signal")
            numbers.signal_reason = None if ok else reason

    def audio_dropped(self, stream: str, seconds: float) -> None:
        """``seconds`` of bad audio were not scored."""
        self.signal_dropped.labels(stream=stream).inc(seconds)

    def update_capture(self, stream: str, stats: Any) -> None:
        """Bring the capture counters up to a source's cumulative ``CaptureStats``."""
        with self._lock:
            seen = self._numbers(stream).capture
            for name in CAPTURE_COUNTERS:
                total = int(getattr(stats, name))
                if total > seen[name]:
                    self.capture[name].labels(stream=stream).inc(total - seen[name])
                    seen[name] = total
            self._numbers(stream).connected = bool(getattr(stats, "connected", True))

    def set_mqtt_connected(self, connected: bool) -> None:
        self.mqtt_connected.set(1 if connected else 0)
        with self._lock:
            self._mqtt = connected

    def set_outbox_depth(self, depth: int) -> None:
        self.outbox_depth.set(depth)
        with self._lock:
            self._outbox = depth

    def set_provider(self, provider: str, device: str, fallback_reason: str = "") -> None:
        """Report the provider ``get_providers()`` says is in use (and why, on a fall-back)."""
        self.provider.info({"provider": provider, "device": device,
                            "fallback_reason": fallback_reason})
        with self._lock:
            self._provider_text = provider + (f" (fallback: {fallback_reason})"
                                              if fallback_reason else "")

    def snapshot(self) -> dict[str, Any]:
        """The latest numbers as plain data (read by the web page, edge.web)."""
        with self._lock:
            return {"node": self.node, "provider": self._provider_text,
                    "mqtt": ("off" if not self.mqtt_configured else
                             "connected" if self._mqtt else "disconnected"),
                    "outbox": self._outbox,
                    "streams": {name: {"hops": n.hops, "score": n.score, "alarm": n.alarm,
                                       "connected": n.connected, "capture": dict(n.capture),
                                       "signal": n.signal, "signal_reason": n.signal_reason}
                                for name, n in self._streams.items()}}

    def heartbeat_line(self) -> str:
        """The main numbers in one line: per stream hops, last score, capture trouble."""
        with self._lock:
            latency = (f"{1000 * self._latency_sum / self._latency_count:.1f} ms"
                       if self._latency_count else "n/a")
            parts = [f"node {self.node}" if self.node else "heartbeat",
                     f"provider {self._provider_text}", f"inference mean {latency}",
                     "mqtt " + ("off" if not self.mqtt_configured else
                                "connected" if self._mqtt else "DISCONNECTED"),
                     f"outbox {self._outbox}"]
            for name, numbers in sorted(self._streams.items()):
                trouble = ", ".join(f"{k} {v}" for k, v in numbers.capture.items() if v)
                parts.append(f"{name}: {numbers.hops} hops, score {numbers.score:.3f}"
                             + (" ALARM" if numbers.alarm else "")
                             + (f" NO SIGNAL ({numbers.signal_reason})"
                                if numbers.signal != "ok" else "")
                             + (f" ({trouble})" if trouble else ""))
        return "; ".join(parts)


class MetricsServer:
    """Serves ``health.registry`` at http://host:port/metrics; ``port=0`` picks a free port."""

    def __init__(self, health: Health, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.health = health
        self.host = host
        self.requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_port) if self._server else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        try:
            self._server, self._thread = start_http_server(self.requested_port, addr=self.host,
                                                           registry=self.health.registry)
        except OSError as err:
            raise BadInput(f"cannot serve metrics on {self.host}:{self.requested_port} "
                           f"({err.strerror}); pick another metrics.port or disable metrics"
                           ) from err
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning("metrics are served on %s, reachable from other machines", self.host)
        logger.info("metrics at %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None


class Heartbeat:
    """Logs ``line()`` (default ``health.heartbeat_line``) every ``interval_s`` seconds."""

    def __init__(self, health: Health, interval_s: float = 60.0,
                 line: Callable[[], str] | None = None,
                 stop_event: threading.Event | None = None) -> None:
        self.interval_s = interval_s
        self.line = line or health.heartbeat_line
        self.stop_event = stop_event or threading.Event()
        self._thread = threading.Thread(target=self._run, name="asd-edge-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                logger.info("%s", self.line())
            except Exception:  # noqa: BLE001  # a heartbeat must never take the daemon down
                logger.exception("heartbeat failed")

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
