"""MQTT output: alarm events that are never lost, retained states, scores, Home Assistant
discovery. paho-mqtt 2 (``CallbackAPIVersion.VERSION2``), MQTT 3.1.1 or 5. The settings are
``edge.config.MqttConfig``, the ``mqtt:`` section of the YAML config.

Topics (``prefix`` configurable, default ``asd-edge``)::

    <prefix>/<node>/status                      retained "online"; last will "offline"
    <prefix>/<node>/<machine>/<section>/alarm   QoS 1 alarm events (edge.outputs.events)
    <prefix>/<node>/<machine>/<section>/state   retained StreamState JSON
    <prefix>/<node>/<machine>/<section>/signal  retained SignalState JSON: ok | no_signal
                                                with its reason (edge.signal)
    <prefix>/<node>/<machine>/<section>/score   QoS 0 ScoreMessage (see below)
    <prefix>/<node>/<machine>/<section>/spectrogram  retained PNG: the spectrogram of the
                                                latest alarm's evidence clip (Home Assistant's
                                                image entity; with discovery on)
    <prefix>/<node>/cmd/not_a_fault             commands in (subscribed QoS 1, opt-in:
                                                feedback.mqtt; edge.feedback)
    <prefix>/<node>/cmd/ack                     QoS 1 acknowledgements of those commands

Scores: the daemon calls ``publish_score`` for every hop of a stream with ``score_messages``,
else once per ``score_interval_seconds`` (10 s; Home Assistant's score sensor), and this output
publishes every score it is given.

Delivery of alarms: ``publish_event`` writes the event to the durable outbox and returns. A
sender thread drains the outbox in order while connected (at most ``inflight_window``
unacknowledged at once) and deletes a row when paho's ``on_publish`` reports the broker's
PUBACK for its message id. After a reconnect it starts again from the oldest row: paho
re-sends its own in-flight messages, and anything else still in the outbox goes again.
Delivery is at least once; subscribers de-duplicate by ``event_id`` (or by ``id`` and
``type``). States and signal states are kept in memory (latest per stream) and published again on
every connect; scores are QoS 0 and are counted in ``scores_dropped`` while disconnected.

The connection: ``connect_async`` + ``loop_start``; paho reconnects. How soon depends on why
the last try failed (``edge.outputs.mqtt_diagnose``): while nothing answers at host:port
(refused, timed out) a try costs one TCP connect and is repeated every ``reconnect_probe_s``
(1 s), so an alarm goes out about that long after the broker is back, however long it was
away; a broker that answers and refuses (TLS, credentials) is retried with exponential backoff
from ``reconnect_min_s`` to ``reconnect_max_s``. A refused connection is *not* connected, and
each cause (plain MQTT at a TLS port or the reverse, a certificate that fails verification,
wrong credentials, no broker) is logged once per outage in one line naming the fix.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.alarms.rule import StreamKey
from edge.config import MqttConfig, TlsConfig
from edge.errors import AsdEdgeError, BadInput, RuntimeFailure
from edge.outputs.discovery import (
    StreamTopics,
    ha_status_topic,
    legacy_topic,
    node_config,
    stream_configs,
)
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState
from edge.outputs.mqtt_diagnose import (
    client_certificate_refusal,
    connect_failure,
    plain_at_tls,
    probe_seconds,
    refusal,
    speaks_tls,
)
from edge.outputs.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, Outbox
from edge.web.spectrogram import spectrogram_png

logger = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
MEMORY_EVENTS = 10_000  # alarm events held in memory while the outbox cannot be written
ERROR_LOG_INTERVAL_S = 300.0  # a persisting outbox failure is logged again at most this often
_EARLY_ACKS_KEPT = 1024  # see MqttOutput._on_publish
# the spectrogram for Home Assistant: 256 frequency rows, at most 600 columns (~150 KB PNG)
SPECTROGRAM_N_FFT = 512
SPECTROGRAM_WIDTH = 600

# (payload, retained, answer): a command's handler; answer(payload) publishes on cmd/ack
CommandHandler = Callable[[bytes, bool, Callable[[bytes], None]], None]


def _segment(value: str, what: str) -> str:
    if not value or any(char in value for char in "/+#"):
        raise BadInput(f"{what} {value!r} cannot be part of an MQTT topic: use a non-empty "
                       "name without '/', '+' or '#'")
    return value


class _Client(mqtt.Client):
    """paho's client, keeping the exception of the latest failed connection attempt: paho's
    ``on_connect_fail`` does not say why (TLS, refused, unreachable)."""

    connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        self.connect_error = None
        try:
            return super().reconnect()
        except OSError as err:
            self.connect_error = err
            raise


class Topics:
    """The topic names of one node."""

    def __init__(self, prefix: str, node: str) -> None:
        self.prefix = prefix
        self.node = _segment(node, "node name")
        self.status = f"{prefix}/{node}/status"

    def command(self, name: str) -> str:
        """``<prefix>/<node>/cmd/<name>``: a command to this node, or ``ack`` (its answers)."""
        return f"{self.prefix}/{self.node}/cmd/{_segment(name, 'command')}"

    def stream(self, stream: StreamKey,
               leaf: Literal["alarm", "state", "score", "signal", "spectrogram"]) -> str:
        machine = _segment(stream.machine, "machine")
        section = _segment(stream.section, "section")
        return f"{self.prefix}/{self.node}/{machine}/{section}/{leaf}"


class MqttOutput:
    """The ``Output`` that publishes to a broker; see the module docstring.

    The outbox is ``outbox_path`` (default ``state_dir/outbox.sqlite3``), bounded by
    ``max_rows`` messages and ``max_bytes`` of payload; pass ``outbox`` to use an open one.
    ``start()`` connects in the background and returns at once; ``close()`` flushes.
    """

    def __init__(self, config: MqttConfig, node: str, state_dir: Path, *,
                 outbox: Outbox | None = None, outbox_path: Path | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
                 commands: dict[str, CommandHandler] | None = None) -> None:
        """``commands``: name -> handler of the commands that arrive on ``cmd/<name>``
        (subscribed at every connect), called with the payload, its retain flag and
        ``publish_ack`` to answer with; it runs on paho's thread, so it must only queue the
        work. None: no command topic is subscribed."""
        # A missing secret fails before anything is opened.
        password = config.resolve_password()
        self.config = config
        self.node = node
        self.topics = Topics(config.prefix, node)
        self.scores_dropped = 0
        self._connected = threading.Event()
        self._ever_connected = False  # close() waits for a broker that answered in this run
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnected = threading.Event()
        self._lock = threading.Lock()  # the in-flight bookkeeping
        self._state_lock = threading.Lock()  # the latest states and their publishing
        self._inflight: dict[int, int] = {}  # paho message id -> outbox seq
        self._sent_at: dict[int, float] = {}  # paho message id -> when it (re)went out
        self._attempt_at: float | None = None  # a connect sent and not yet answered, since
        self._stalled = False  # the last connection was dropped for want of an answer
        self._early_acks: OrderedDict[int, ReasonCode] = OrderedDict()
        self._states: dict[StreamKey, StreamState] = {}
        self._signals: dict[StreamKey, SignalState] = {}
        self._spectrograms: dict[StreamKey, bytes] = {}  # latest alarm's PNG per stream
        self._problem_logged: str | None = None  # the cause logged in this outage
        self._retry_answered: bool | None = None  # the backoff paho is set to (see _retry)
        self._answered = False  # a CONNACK came for the latest try
        # Events the outbox could not store (key < 0, counting down; see publish_event).
        self._memory: dict[int, tuple[str, bytes]] = {}
        self._memory_seq = 0
        self.memory_dropped = 0
        self.outbox_error: str | None = None  # the latest write failure, None once it works
        self.outbox_failures = 0
        self._outbox_error_logged = 0.0
        self._sender: threading.Thread | None = None
        self._closed = False
        self._commands = {self.topics.command(name): handler
                          for name, handler in (commands or {}).items()}
        self._client = self._make_client(password)  # bad TLS files fail here, before the outbox
        self.outbox = outbox or Outbox(outbox_path or Path(state_dir) / OUTBOX_FILE,
                                       max_rows=max_rows, max_bytes=max_bytes,
                                       memory_if_unusable=True)
        if self.outbox.unusable is not None:
            # Monitoring goes on: events wait in memory (lost only if the daemon stops before
            # the broker takes them); status and metrics show the error until a restart.
            self.outbox_error = self.outbox.unusable
            self.outbox_failures = 1
            logger.error("%s; until then alarm events wait in memory only (lost if the daemon "
                         "stops before the broker takes them)", self.outbox.unusable)

    # -- set-up ----------------------------------------------------------------------------

    def _make_client(self, password: str | None) -> _Client:
        config = self.config
        client_id = config.client_id or f"asd-edge-{self.node}"
        if config.protocol == "5":
            client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        else:
            # A clean session: what must survive a disconnect is in our own outbox.
            client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        if config.username:
            client.username_pw_set(config.username, password)
        if config.use_tls:
            # mqtts:// without a tls section: the system's trusted CAs, host name checked.
            tls = config.tls or TlsConfig.model_validate({})
            try:
                client.tls_set(ca_certs=str(tls.ca) if tls.ca else None,
                               certfile=str(tls.cert) if tls.cert else None,
                               keyfile=str(tls.key) if tls.key else None,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as err:
                raise BadInput(f"MQTT TLS files (mqtt.tls ca={tls.ca}, cert={tls.cert}, "
                               f"key={tls.key}): {err}; fix the paths or the files") from err
            client.tls_insecure_set(tls.insecure)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        self._retry(client, answered=True)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start the sender."""
        logger.info("MQTT: connecting to %s:%d (MQTT %s, %s) as node %s; outbox %s holds %d",
                    self.config.host, self.config.port, self.config.protocol,
                    "TLS" if self.config.use_tls else "plain TCP", self.node, self.outbox.path,
                    self.outbox.depth())
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    # -- the Output protocol ---------------------------------------------------------------

    def publish_event(self, event: AlarmEvent) -> None:
        """Store the event in the outbox (durably) and wake the sender.

        An outbox that cannot be written (a full or read-only state disk) does not lose the
        event: it is kept in memory (at most ``MEMORY_EVENTS``), sent straight to the broker
        while connected, and moved into the outbox when the disk takes it again; the failure
        is in ``outbox_error`` (status, metrics) and logged once per outage."""
        topic, payload = self.topics.stream(event.stream, "alarm"), event.to_json()
        with self._lock:
            waiting = bool(self._memory)
        if not waiting:
            try:
                self.outbox.put(topic, payload, qos=1)
            except RuntimeFailure as err:
                self._outbox_failed(err)
            else:
                self._wake.set()
                return
        with self._lock:
            self._memory_seq -= 1
            self._memory[self._memory_seq] = (topic, payload)
            while len(self._memory) > MEMORY_EVENTS:
                oldest = max(self._memory)  # the keys count down: the largest is the oldest
                del self._memory[oldest]
                self.memory_dropped += 1
        self._wake.set()

    def pending_events(self) -> list[AlarmEvent]:
        """The alarm events waiting in the outbox (from before this start, or not yet sent)."""
        events = []
        after = 0
        while batch := self.outbox.peek(after_seq=after, limit=500):
            after = batch[-1].seq
            for item in batch:
                if item.topic.endswith("/alarm"):
                    try:
                        events.append(AlarmEvent.from_json(item.payload))
                    except ValueError:
                        logger.warning("outbox message %d on %s is not an alarm event; "
                                       "sent as it is", item.seq, item.topic)
        return events

    def _outbox_failed(self, err: Exception) -> None:
        with self._lock:
            first = self.outbox_error is None
            self.outbox_error = str(err)
            self.outbox_failures += 1
            now = time.monotonic()
            due = first or now - self._outbox_error_logged >= ERROR_LOG_INTERVAL_S
            if due:
                self._outbox_error_logged = now
        if due:
            logger.error("%s; alarm events are kept in memory (%d held) and sent straight to "
                         "the broker until the disk takes them again: free space on the state "
                         "disk (%d write failure(s) so far)", err, len(self._memory) + 1,
                         self.outbox_failures)

    def _store_memory(self) -> None:
        """Move events held in memory into the outbox, oldest first, once it takes them."""
        with self._lock:
            held = sorted(self._memory.items(), reverse=True)  # oldest (largest key) first
        for key, (topic, payload) in held:
            with self._lock:
                if key not in self._memory or key in self._inflight.values():
                    continue
            try:
                self.outbox.put(topic, payload, qos=1)
            except RuntimeFailure as err:
                self._outbox_failed(err)
                return
            with self._lock:
                self._memory.pop(key, None)
        with self._lock:
            recovered = self.outbox_error is not None and not self._memory
            if recovered:
                self.outbox_error = None
        if recovered:
            logger.info("the outbox %s takes events again", self.outbox.path)

    def publish_state(self, state: StreamState) -> None:
        """Remember the stream's state and publish it retained (again after each connect).
        The first state of a stream also announces it to Home Assistant."""
        # One lock around "remember and publish" here and in on_connect, so a reconnect can
        # never publish an older state after a newer one.
        with self._state_lock:
            new_stream = state.stream not in self._states
            self._states[state.stream] = state
            if not self._connected.is_set():
                return  # published on connect; paho would re-send a stale one after it
            if new_stream and self.config.discovery:
                self._announce(state.stream)
            self._client.publish(self.topics.stream(state.stream, "state"), state.to_json(),
                                 qos=1, retain=True)

    def publish_signal(self, signal: SignalState) -> None:
        """Remember the stream's signal state and publish it retained (again after each
        connect): Home Assistant's availability of the stream's entities follows it."""
        with self._state_lock:
            self._signals[signal.stream] = signal
            if not self._connected.is_set():
                return
            self._client.publish(self.topics.stream(signal.stream, "signal"), signal.to_json(),
                                 qos=1, retain=True)

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        """An alarm's evidence clip is written: its spectrogram goes retained to the stream's
        ``spectrogram`` topic (Home Assistant's image entity), again after each connect; only
        with discovery on (the picture is for Home Assistant, 150 KB a stream). A clip that
        cannot be read is logged; the alarm event has gone out already."""
        if not self.config.discovery:
            return
        try:
            png = spectrogram_png(clip, n_fft=SPECTROGRAM_N_FFT, hop=SPECTROGRAM_N_FFT // 2,
                                  max_width=SPECTROGRAM_WIDTH)
        except (OSError, RuntimeError, ValueError, AsdEdgeError) as err:
            logger.error("MQTT: no spectrogram of %s for Home Assistant: %s", clip, err)
            return
        with self._state_lock:
            self._spectrograms[stream] = png
            if self._connected.is_set():
                self._client.publish(self.topics.stream(stream, "spectrogram"), png, qos=1,
                                     retain=True)

    def publish_score(self, message: ScoreMessage) -> None:
        """Publish one hop's score at QoS 0; counted in ``scores_dropped`` when offline."""
        if not self._connected.is_set():
            self.scores_dropped += 1
            return
        info = self._client.publish(self.topics.stream(message.stream, "score"),
                                    message.to_json(), qos=0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.scores_dropped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what the broker takes within ``timeout_s``, publish ``offline``, disconnect.
        What is left stays in the outbox for the next start. A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        # Waits while connected, and while a broker that answered in this run is away (a
        # restart: it is back within seconds); a broker never reached is not waited for.
        while ((self._connected.is_set() or self._ever_connected)
               and (self.outbox.depth() or self._memory) and time.monotonic() < deadline):
            self._wake.set()
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._connected.is_set():
            info = self._client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as err:
                logger.warning("MQTT: could not publish the offline status: %s", err)
        self._client.disconnect()
        self._client.loop_stop()
        if self._memory:
            self._store_memory()
        if self._memory:
            logger.error("MQTT: %d alarm event(s) could neither be stored in the outbox %s nor "
                         "sent; they are in the journal only", len(self._memory),
                         self.outbox.path)
        left = self.outbox.depth()
        if left:
            logger.warning("MQTT: %d alarm message(s) not acknowledged by the broker; they "
                           "stay in %s and go out at the next start", left, self.outbox.path)
        self.outbox.close()

    def publish_ack(self, payload: bytes) -> None:
        """Answer a command on ``cmd/ack`` (QoS 1, not retained). Not through the outbox: an
        answer nobody waits for after a restart is worth nothing, and the journal holds what
        the command changed."""
        info = self._client.publish(self.topics.command("ack"), payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            logger.error("MQTT: could not publish a command acknowledgement: %s",
                         mqtt.error_string(info.rc))

    # -- what the metrics read -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def outbox_depth(self) -> int:
        return self.outbox.depth()

    # -- paho callbacks (paho's network thread) --------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: ReasonCode, properties: Any) -> None:
        self._answered = True
        self._attempt_at = None
        self._stalled = False
        if reason_code.is_failure:
            self._connected.clear()
            self._retry(client, answered=True)
            self._log_problem(refusal(reason_code, self.config), logging.ERROR)
            return
        logger.info("MQTT: connected to %s:%d; %d alarm message(s) waiting in the outbox",
                    self.config.host, self.config.port, self.outbox.depth())
        self._problem_logged = None
        with self._lock:  # paho sends its in-flight messages again now: their clocks restart
            now = time.monotonic()
            self._sent_at = dict.fromkeys(self._sent_at, now)
        # A broker lost from now on is tried again at the probe interval (see _retry).
        self._retry(client, answered=False)
        client.publish(self.topics.status, "online", qos=1, retain=True)
        if self.config.discovery:
            client.subscribe(ha_status_topic(self.config.discovery_prefix), qos=1)
        for topic in self._commands:
            client.subscribe(topic, qos=1)
        self._ever_connected = True
        with self._state_lock:
            self._connected.set()
            for state in self._states.values():
                if self.config.discovery:
                    self._announce(state.stream)
                client.publish(self.topics.stream(state.stream, "state"), state.to_json(),
                               qos=1, retain=True)
            for signal in self._signals.values():
                client.publish(self.topics.stream(signal.stream, "signal"), signal.to_json(),
                               qos=1, retain=True)
            for stream, png in self._spectrograms.items():
                client.publish(self.topics.stream(stream, "spectrogram"), png, qos=1,
                               retain=True)
        self._reconnected.set()
        self._wake.set()

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._answered = False
        self._attempt_at = time.monotonic()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._attempt_at = None
        err = client.connect_error if isinstance(client, _Client) else None
        if err is None:
            err = OSError("the connection attempt failed")
        diagnosis = connect_failure(err, self.config, str(self.outbox.path))
        self._retry(client, answered=diagnosis.answered)
        self._log_problem(diagnosis.message,
                          logging.WARNING if diagnosis.level == "warning" else logging.ERROR)

    def _retry(self, client: mqtt.Client, *, answered: bool) -> None:
        """Set paho's delay before its next try: the short probe interval while nothing
        answers (a try is one TCP connect: the broker is back within a second of it being
        up), exponential backoff while the broker answers and refuses. Runs on paho's thread
        before it waits; the backoff is reset only on a change, so it keeps doubling."""
        if answered == self._retry_answered:
            return
        self._retry_answered = answered
        if answered:
            client.reconnect_delay_set(self.config.reconnect_min_s,  # type: ignore[arg-type]
                                       self.config.reconnect_max_s)  # type: ignore[arg-type]
        else:
            probe = probe_seconds(self.config)
            client.reconnect_delay_set(probe, probe)  # type: ignore[arg-type]

    def _log_problem(self, message: str, level: int) -> None:
        # Once per outage and cause, not at every retry; the metric shows it the whole time.
        if message != self._problem_logged:
            self._problem_logged = message
            logger.log(level, "%s", message)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: ReasonCode, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stop.is_set():
            return
        if self._stalled:  # dropped by _check_stall, which said why: try again soon
            self._stalled = False
            self._retry(client, answered=False)
        elif was_connected:
            logger.warning("MQTT: disconnected from %s:%d (%s); reconnecting",
                           self.config.host, self.config.port, reason_code)
        elif not self._answered:
            # Closed before any CONNACK: something listens there, and not an MQTT broker on
            # plain TCP, most often a TLS listener given as mqtt://.
            self._retry(client, answered=True)
            refused_certificate = client_certificate_refusal(self.config) \
                if self.config.use_tls else None
            if not self.config.use_tls and speaks_tls(self.config.host, self.config.port):
                self._log_problem(plain_at_tls(self.config), logging.ERROR)
            elif refused_certificate is not None:
                self._log_problem(refused_certificate, logging.ERROR)
            else:
                self._log_problem(f"MQTT: {self.config.host}:{self.config.port} closed the "
                                  f"connection before answering ({reason_code}): a broker "
                                  "stopping or overloaded, or not an MQTT listener of the "
                                  "URL's scheme (mqtt:// plain, mqtts:// TLS)", logging.WARNING)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            self._sent_at.pop(mid, None)
            if seq is None:
                # The PUBACK can arrive before publish() has returned the mid to the sender;
                # keep it for the sender to find. QoS 0 and status messages land here too,
                # so only the latest few are kept (mids repeat only after 65535 messages).
                self._early_acks[mid] = reason_code
                while len(self._early_acks) > _EARLY_ACKS_KEPT:
                    self._early_acks.popitem(last=False)
                return
        self._acknowledged(seq, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._commands.get(message.topic)
        if handler is not None:
            try:
                handler(bytes(message.payload), bool(message.retain), self.publish_ack)
            except Exception:  # a command must never take paho's network thread down
                logger.exception("MQTT: the handler of %s failed", message.topic)
            return
        if (message.topic == ha_status_topic(self.config.discovery_prefix)
                and message.payload.strip().lower() == b"online"):
            logger.info("MQTT: Home Assistant came online; announcing %d stream(s) again",
                        len(self._states))
            with self._state_lock:
                for stream in self._states:
                    self._announce(stream)

    # -- sending ---------------------------------------------------------------------------

    def _announce(self, stream: StreamKey) -> None:
        """Publish the discovery configs of the node device and of the stream's unit."""
        prefix = self.config.discovery_prefix
        topics = StreamTopics(state=self.topics.stream(stream, "state"),
                              score=self.topics.stream(stream, "score"),
                              signal=self.topics.stream(stream, "signal"),
                              spectrogram=self.topics.stream(stream, "spectrogram"))
        configs = [node_config(self.node, self.topics.status, prefix),
                   *stream_configs(stream, topics, self.topics.status, prefix)]
        self._client.publish(legacy_topic(stream, prefix), b"", qos=1, retain=True)
        for topic, config in configs:
            self._client.publish(topic, json.dumps(config), qos=1, retain=True)

    def _acknowledged(self, seq: int, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            # Kept in the outbox; the sender goes over it again after the next reconnect.
            logger.error("MQTT: the broker refused alarm message %d: %s; it stays in the "
                         "outbox", seq, reason_code)
            return
        if seq < 0:  # an event held in memory (the outbox could not store it)
            with self._lock:
                self._memory.pop(seq, None)
        else:
            self.outbox.remove(seq)
        self._wake.set()

    def _send_loop(self) -> None:
        cursor = 0  # highest outbox seq handed to paho since the last (re)connect
        handed: set[int] = set()  # memory events handed to paho since the last (re)connect
        while not self._stop.is_set():
            if self._reconnected.is_set():
                self._reconnected.clear()
                cursor = 0
                handed.clear()
            if self._memory:
                self._store_memory()
            while self._connected.is_set() and not self._stop.is_set():
                with self._lock:
                    room = self.config.inflight_window - len(self._inflight)
                    sending = set(self._inflight.values())
                    held = [(key, message) for key, message in sorted(self._memory.items(),
                                                                      reverse=True)
                            if key not in sending and key not in handed][:max(room, 0)]
                for key, (topic, payload) in held:  # not storable: straight to the broker
                    handed.add(key)
                    self._send(key, topic, payload, 1, False)
                    room -= 1
                if room <= 0:
                    break
                items = self.outbox.peek(after_seq=cursor, limit=room)
                if not items:
                    break
                for item in items:
                    cursor = item.seq
                    if item.seq not in sending:
                        self._send(item.seq, item.topic, item.payload, item.qos, item.retain)
            self._check_stall()
            self._wake.wait(1.0)
            self._wake.clear()

    def _check_stall(self, now: float | None = None) -> None:
        """Open the connection again when the broker stopped answering: no CONNACK to a
        connect, or no PUBACK to an alarm message, within ``ack_timeout_s``. A hung broker or a
        link that drops packets silently keeps the TCP connection open, and paho would wait
        for the keep-alive (1.5 x ``keepalive``) before it notices; an alarm should not. The
        socket is shut down under paho, which then reconnects (at the probe interval) and
        sends its in-flight messages again."""
        now = time.monotonic() if now is None else now
        limit = self.config.ack_timeout_s
        with self._lock:
            oldest = min(self._sent_at.values(), default=None)
            waiting = len(self._sent_at)
        if self._connected.is_set():
            if oldest is None or now - oldest < limit:
                return
            what = (f"no PUBACK for {waiting} alarm message(s) within {limit:g} s "
                    "(mqtt.ack_timeout_s)")
        else:
            started = self._attempt_at
            if started is None or now - started < limit:
                return
            what = f"no CONNACK within {limit:g} s (mqtt.ack_timeout_s)"
        sock = self._client.socket()
        if sock is None:
            return
        self._stalled = True
        self._attempt_at = None
        self._log_problem(f"MQTT: {self.config.host}:{self.config.port} stopped answering: "
                          f"{what}, a hung broker or a link that drops silently; opening the "
                          "connection again (alarm messages wait in the outbox)",
                          logging.WARNING)
        try:
            cast(socket.socket, sock).shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # already closed: paho is reconnecting anyway

    def _send(self, seq: int, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        # Not under self._lock: paho runs on_publish holding its own lock, which publish()
        # also takes, so holding ours across publish() could deadlock.
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            logger.error("MQTT: paho did not take alarm message %d: %s; retried after the "
                         "next reconnect", seq, mqtt.error_string(info.rc))
            return
        # On MQTT_ERR_NO_CONN paho keeps the message and sends it after reconnecting.
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = seq
                self._sent_at[info.mid] = time.monotonic()
        if early is not None:
            self._acknowledged(seq, early)
