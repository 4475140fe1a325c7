"""The daemon's configuration: one YAML file for every microphone and machine on a box.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting) and gives
each field a title and description. ``load_config(path)`` names the YAML line of each error;
``config_from_flags(...)`` builds the same ``EdgeConfig`` from the CLI flags of the
single-stream case; ``override_config(config, ...)`` puts the flags given with ``--config`` over
the file's values (a flag wins over the file). Relative paths in a file are relative to the
file's folder, those of flags to the working directory.

Secrets: the MQTT password comes from an environment variable (``password_env``) or a file
(``password_file``, which should be readable by the service user only). A literal
``password`` in the YAML is refused: config files get copied, committed and attached to
tickets, and the daemon's command line is visible to every user of the box, so neither is a
place for a secret.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.alarms.rule import AlarmRuleConfig
from edge.errors import BadInput

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # safe inside an MQTT topic and a file name
DEFAULT_MQTT_PORT = {"mqtt": 1883, "mqtts": 8883}


MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_NODES = 100_000
MAX_WINDOW_SECONDS = 600.0


class Strict(BaseModel):
    # Unknown keys are errors; a NaN or infinite number (".nan", "1e999") is one too: a NaN
    # threshold would switch the stream's alarms off without a word (issue 13, item 4).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FileSourceConfig(Strict):
    """Replay a recording as if it were a microphone."""

    type: Literal["file"] = Field(title="Source type", description="'file': a WAV/FLAC file")
    path: Path = Field(title="Path", description="WAV or FLAC file; resampled to 16 kHz")
    channel: int = Field(0, ge=0, title="Channel", description="channel of a multichannel file")
    speed: Literal["realtime", "max"] = Field(
        "realtime", title="Speed",
        description="'realtime' paces blocks like a microphone; 'max' as fast as scored")
    block_seconds: float = Field(0.1, gt=0, le=2.0, title="Block length",
                                 description="seconds of audio per block handed to the scorer")


class MicSourceConfig(Strict):
    """Capture from a sound card through PortAudio ('asd-edge devices' lists them)."""

    type: Literal["mic"] = Field(title="Source type", description="'mic': an input device")
    device: int | str = Field(title="Device",
                              description="PortAudio index, exact name or unique part of a name")
    channel: int = Field(0, ge=0, title="Channel", description="input channel (0 is the first)")
    sample_rate: int | None = Field(
        None, ge=16000, title="Device rate",
        description="Hz to open the device at; default 16000 if accepted, else the device's "
                    "default; resampled to 16 kHz")
    block_seconds: float = Field(0.1, gt=0, le=2.0, title="Block length",
                                 description="seconds per audio callback")
    queue_blocks: int = Field(50, ge=2, title="Queue length",
                              description="blocks buffered for a slow consumer before dropping")


SourceConfig = Annotated[FileSourceConfig | MicSourceConfig, Field(discriminator="type")]


class AlarmConfig(AlarmRuleConfig):
    """The alarm rule of a stream (``edge.alarms.rule`` documents the defaults and why), plus
    an optional threshold that overrides the section's calibrated one from the bundle.

    Levels left out (or written as null) are "not set", never a default value in disguise:
    without ``threshold`` the bundle's calibrated thresholds apply, and without
    ``clear_threshold`` and ``clear_fraction`` the bundle's calibrated clear thresholds (0.9 x
    the threshold under a ``threshold`` override). See ``edge.daemon.alarm_rule_for``."""

    threshold: float | None = Field(
        None, title="Threshold override",
        description="trip threshold; default: the section's threshold from the bundle")
    false_alarms_per_day: float | None = Field(
        None, gt=0, le=1000, title="False-alarm budget",
        description="false alarms per day this stream may raise on healthy sound (an upper "
                    "bound, e.g. 0.0333 = one a month); the thresholds are recalibrated for it "
                    "from the bundle's stored out-of-sample hop scores (a bundle exported or "
                    "enrolled with --false-alarms-per-day); default: the bundle's own")


class SignalConfig(Strict):
    """When a stream's audio counts as no signal (edge.signal): never scored, never an alarm."""

    silence_dbfs: float = Field(-100.0, le=0.0, ge=-200.0, title="Silence level",
                                description="RMS level (dB re full scale) below which audio "
                                            "is digital silence; also the least variation of "
                                            "audio that is not stuck")
    no_signal_seconds: float = Field(2.0, gt=0.0, le=600.0, title="No-signal delay",
                                     description="seconds of bad audio (or of a lost device) "
                                                 "before the stream reports no signal")
    ok_seconds: float = Field(1.0, gt=0.0, le=600.0, title="Recovery delay",
                              description="seconds of sound before it reports ok again")
    log_interval_minutes: float = Field(15.0, gt=0.0, title="Log interval",
                                        description="minutes between 'still no signal' lines")


class StreamConfig(Strict):
    """One microphone (or file) listening to one machine unit."""

    name: str | None = Field(None, pattern=NAME_PATTERN, title="Name",
                             description="stream name; default '<machine>-section_<SS>'")
    source: SourceConfig = Field(title="Source", description="where the audio comes from")
    machine: str = Field(pattern=NAME_PATTERN, title="Machine type",
                         description="a machine type with a bundle in models_dir")
    section: int = Field(0, ge=0, le=99, title="Section",
                         description="the unit's section in the bundle (0 or 'section_00')")
    hop_seconds: float = Field(0.5, gt=0, le=MAX_WINDOW_SECONDS, title="Hop",
                               description="seconds between scores")
    window_seconds: float = Field(10.0, gt=0, le=MAX_WINDOW_SECONDS, title="Window",
                                  description="seconds of audio each score looks at (at most "
                                              "10 minutes)")
    alarm: AlarmConfig = Field(default_factory=AlarmConfig, title="Alarm rule",
                               description="trip_hops of window_hops to trip; clear and hold")
    score_messages: bool = Field(False, title="Score messages",
                                 description="publish every hop's score (QoS 0)")
    score_interval_seconds: float = Field(
        10.0, ge=0.0, title="Score interval",
        description="without score_messages, one score message per this many seconds of "
                    "audio (Home Assistant's score sensor); 0: none")
    signal: SignalConfig = Field(default_factory=SignalConfig, title="Signal check",
                                 description="what counts as no signal (silence, NaN, stuck, "
                                             "frozen)")
    domain: Literal["auto", "source", "target", "pooled"] = Field(
        "auto", title="Domain",
        description="whose thresholds a hop is compared with: 'auto' the domain of the hop's "
                    "nearest normal reference; 'source' or 'target' pin that domain's (the "
                    "unit's operating condition is known); 'pooled' one threshold for both")

    @field_validator("section", mode="before")
    @classmethod
    def _section_name(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"section_\d{2}", value):
            return int(value[-2:])
        return value

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.hop_seconds > self.window_seconds:
            raise ValueError(f"hop_seconds ({self.hop_seconds}) must not exceed "
                             f"window_seconds ({self.window_seconds})")
        if self.name is None:
            self.name = f"{self.machine}-section_{self.section:02d}"
        return self


class TlsConfig(Strict):
    """TLS for the broker connection (mqtts://); without ``ca`` the system CAs are used."""

    ca: Path | None = Field(None, title="CA file", description="CA certificate(s), PEM")
    cert: Path | None = Field(None, title="Client certificate", description="PEM, with key")
    key: Path | None = Field(None, title="Client key", description="PEM, with cert")
    insecure: bool = Field(False, title="Skip host name check",
                           description="accept a certificate for another host (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key for a client certificate, or neither")
        return self


class MqttConfig(Strict):
    """The broker alarms go to, and how ``edge.outputs.mqtt`` talks to it. Secrets never on
    the command line nor in this file."""

    url: str = Field(title="Broker URL", description="mqtt://host[:1883] or mqtts://host[:8883]")
    prefix: str = Field("asd-edge", pattern=r"^[^#+\s]+$", title="Topic prefix",
                        description="topics are <prefix>/<node>/...")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", title="MQTT version",
                                             description="'3.1.1' or '5'")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value
    username: str | None = Field(None, title="User name", description="broker user")
    password: str | None = Field(None, title="(refused)",
                                 description="not allowed: use password_env or password_file")
    password_env: str | None = Field(None, title="Password variable",
                                     description="environment variable holding the password")
    password_file: Path | None = Field(None, title="Password file",
                                       description="file holding the password (mode 0600)")
    tls: TlsConfig | None = Field(None, title="TLS",
                                  description="certificates; implied by mqtts://")
    client_id: str | None = Field(None, title="Client id", description="default asd-edge-<node>")
    keepalive: int = Field(
        30, ge=5, title="Keep-alive",
        description="seconds between keep-alive pings; after a silent loss of the connection "
                    "the broker sends the last will about 1.5 times this later")
    discovery: bool = Field(True, title="Home Assistant discovery",
                            description="announce a binary sensor per stream")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+\s]+$",
                                  title="Discovery prefix",
                                  description="Home Assistant's discovery topic prefix")
    reconnect_min_s: float = Field(
        1.0, gt=0, title="First reconnect delay",
        description="seconds; doubled after each try the broker answered and refused (TLS, "
                    "credentials), up to reconnect_max_s")
    reconnect_max_s: float = Field(
        60.0, gt=0, title="Longest reconnect delay",
        description="seconds between tries while the broker answers and refuses")
    reconnect_probe_s: float = Field(
        1.0, gt=0, title="Reconnect delay while nothing answers",
        description="seconds between tries while nothing answers at host:port (connection "
                    "refused or timed out): such a try costs one TCP connect, and an alarm "
                    "goes out within about this long after the broker is back (at most "
                    "reconnect_max_s)")
    ack_timeout_s: float = Field(
        10.0, gt=0, le=3600, title="Answer timeout",
        description="seconds without the broker's CONNACK to a connect, or its PUBACK to an "
                    "alarm message, before the connection counts as stalled and is opened "
                    "again (a hung broker or a link that drops silently; the keep-alive alone "
                    "would take 1.5 x keepalive)")
    inflight_window: int = Field(20, ge=1, title="In-flight window",
                                 description="alarm messages sent and not yet acknowledged, "
                                             "at most")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in DEFAULT_MQTT_PORT or not parts.hostname:
            raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            parts.port  # noqa: B018  # raises on a bad port
        except ValueError as err:
            raise ValueError(f"{value!r} has a bad port ({err})") from err
        if parts.password is not None or parts.username is not None:
            raise ValueError("credentials in the URL are refused: use username with "
                             "password_env or password_file")
        return value

    @field_validator("password")
    @classmethod
    def _no_literal_password(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("a literal password is refused; put it in an environment "
                             "variable (password_env: NAME) or in a file readable only by the "
                             "service user (password_file: PATH)")
        return None

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must be at least "
                             f"reconnect_min_s ({self.reconnect_min_s})")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or DEFAULT_MQTT_PORT[parts.scheme]

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or self.tls is not None

    def resolve_password(self) -> str | None:
        """The password from the environment or the file; ``BadInput`` when it is missing."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise BadInput(f"mqtt.password_env names {self.password_env!r}, which is not "
                               "set in the environment; export it (or use password_file)")
            return value
        if self.password_file:
            try:
                if self.password_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    logger.warning("%s can be read by other users; chmod 600 it",
                                   self.password_file)
                return self.password_file.read_text().strip()
            except OSError as err:
                raise BadInput(f"mqtt.password_file {self.password_file}: cannot read it "
                               f"({err.strerror}); fix the path or the permissions") from err
        return None


class OutboxConfig(Strict):
    """The durable queue every event passes through before the broker has it."""

    path: Path | None = Field(None, title="Outbox file",
                              description="SQLite file; default <state_dir>/outbox.sqlite")
    max_events: int = Field(10000, ge=10, title="Capacity",
                            description="events kept while the broker is away")


class EvidenceConfig(Strict):
    """WAV clips of each alarm, with the audio that led up to it."""

    enabled: bool = Field(True, title="Enabled", description="save a clip per alarm")
    dir: Path | None = Field(None, title="Folder", description="default <state_dir>/clips")
    pre_roll_seconds: float = Field(10.0, ge=0, le=120, title="Pre-roll",
                                    description="seconds before the alarm (one window)")
    post_roll_seconds: float = Field(5.0, ge=0, le=120, title="Post-roll",
                                     description="seconds after the alarm")
    max_clips: int = Field(500, ge=1, title="Most clips", description="oldest removed first")
    max_age_days: float = Field(30.0, gt=0, title="Oldest clip",
                                description="days a clip is kept")
    max_megabytes: float = Field(1000.0, gt=0, title="Disk limit",
                                 description="MB all clips may take together")


class MetricsConfig(Strict):
    """Prometheus metrics over HTTP, and the heartbeat line in the log."""

    enabled: bool = Field(True, title="Enabled", description="serve /metrics")
    host: str = Field("127.0.0.1", title="Bind address",
                      description="127.0.0.1 keeps metrics on the box; 0.0.0.0 exposes them")
    port: int = Field(9108, ge=0, le=65535, title="Port", description="HTTP port (0: any free)")
    heartbeat_seconds: float = Field(60.0, gt=0, title="Heartbeat",
                                     description="seconds between heartbeat log lines")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class WebConfig(Strict):
    """The operator's web page (edge.web): streams, scores, alarm episodes, clips."""

    enabled: bool = Field(False, title="Enabled", description="serve the web page")
    host: str = Field("127.0.0.1", title="Bind address",
                      description="127.0.0.1 keeps the page on the box; any other address "
                                  "needs password_env or password_file")
    port: int = Field(8090, ge=0, le=65535, title="Port", description="HTTP port (0: any free)")
    password_env: str | None = Field(None, title="Password variable",
                                     description="environment variable holding the password")
    password_file: Path | None = Field(None, title="Password file",
                                       description="file holding the password (chmod 600)")
    public_url: str | None = Field(None, title="Public URL",
                                   description="base URL subscribers use for clip links; "
                                               "default http://HOST:PORT")

    @model_validator(mode="after")
    def _check(self) -> WebConfig:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if self.enabled and self.host not in LOOPBACK_HOSTS and not (
                self.password_env or self.password_file):
            raise ValueError(f"the web page on {self.host} is reachable from other machines: "
                             "set web.password_env or web.password_file (or bind 127.0.0.1)")
        return self

    def resolve_password(self) -> str | None:
        """The password from the environment or the file; ``BadInput`` when it is missing."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise BadInput(f"web.password_env names {self.password_env!r}, which is not "
                               "set in the environment; export it (or use password_file)")
            return value
        if self.password_file:
            try:
                value = self.password_file.read_text().strip()
            except OSError as err:
                raise BadInput(f"web.password_file {self.password_file}: cannot read it "
                               f"({err.strerror}); fix the path or the permissions") from err
            if not value:
                raise BadInput(f"web.password_file {self.password_file} is empty; write the "
                               "password into it")
            return value
        return None


class FeedbackConfig(Strict):
    """Operator feedback ("not a fault": an episode's clip enrolled as normal sound)."""

    mqtt: bool = Field(
        False, title="MQTT command",
        description="take not_a_fault commands on <prefix>/<node>/cmd/not_a_fault and answer "
                    "on .../cmd/ack; off by default: whoever may publish there changes the "
                    "thresholds, so the broker's ACL must restrict the cmd topics first")


def _default_node() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]) or "edge"
    return name if re.match(NAME_PATTERN, name) else f"edge-{name}"


class EdgeConfig(Strict):
    """Everything one daemon runs: its streams, where alarms go, what it keeps and reports."""

    node: str = Field(default_factory=_default_node, pattern=NAME_PATTERN, title="Node name",
                      description="this box in topics and events; default: the host name")
    models_dir: Path = Field(Path("models"), title="Models folder",
                             description="holds one bundle folder per machine type")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", title="Inference device",
        description="'cuda' fails if CUDA is unusable; 'auto' falls back to the CPU")
    threads: int | None = Field(None, ge=1, title="Threads",
                                description="ONNX Runtime intra-op threads; default: CPU cores")
    state_dir: Path = Field(Path("state"), title="State folder",
                            description="outbox and clips unless given elsewhere")
    streams: list[StreamConfig] = Field(min_length=1, title="Streams",
                                        description="one entry per microphone (or file)")
    mqtt: MqttConfig | None = Field(None, title="MQTT",
                                    description="broker; without it events go to the journal")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, title="Outbox",
                                 description="durable event queue")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, title="Evidence",
                                     description="alarm audio clips")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, title="Metrics",
                                   description="Prometheus endpoint and heartbeat")
    web: WebConfig = Field(default_factory=WebConfig, title="Web page",
                           description="the operator's page; off by default")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, title="Operator feedback",
                                     description="'not a fault' over MQTT; off by default")

    @model_validator(mode="after")
    def _unique_streams(self) -> EdgeConfig:
        seen: set[str] = set()
        for stream in self.streams:
            assert stream.name is not None
            if stream.name in seen:
                raise ValueError(f"two streams are named {stream.name!r}; give each a "
                                 "distinct name")
            seen.add(stream.name)
        return self

    @property
    def outbox_path(self) -> Path:
        return self.outbox.path or self.state_dir / "outbox.sqlite"

    @property
    def evidence_dir(self) -> Path:
        return self.evidence.dir or self.state_dir / "clips"

    def summary(self) -> list[str]:
        """Human-readable lines: what this config will run."""
        lines = [f"node {self.node}: {len(self.streams)} stream(s), models in {self.models_dir}, "
                 f"device {self.device}"]
        for stream in self.streams:
            source = stream.source
            where = (f"file {source.path} ({source.speed})" if source.type == "file"
                     else f"mic {source.device!r} channel {source.channel}")
            lines.append(f"  {stream.name}: {stream.machine} section_{stream.section:02d} from "
                         f"{where}; hop {stream.hop_seconds} s, window {stream.window_seconds} s,"
                         f" alarm {stream.alarm.trip_hops} of {stream.alarm.window_hops}")
        lines.append(f"  mqtt: {self.mqtt.url} prefix {self.mqtt.prefix!r}" if self.mqtt
                     else "  mqtt: none (events go to the log only)")
        lines.append(f"  outbox: {self.outbox_path} (max {self.outbox.max_events} events)")
        lines.append(f"  evidence: {self.evidence_dir}" if self.evidence.enabled
                     else "  evidence: off")
        lines.append(f"  metrics: http://{self.metrics.host}:{self.metrics.port}/metrics"
                     if self.metrics.enabled else "  metrics: off")
        if self.feedback.mqtt:
            lines.append(f"  feedback: not_a_fault commands on "
                         f"{self.mqtt.prefix if self.mqtt else 'asd-edge'}/{self.node}/cmd/"
                         "not_a_fault (restrict it in the broker's ACL)")
        return lines


# -- loading a YAML file, errors with line numbers ----------------------------------------------

class ConfigError(BadInput):
    """Config errors; ``problems`` holds (line or None, dotted location, message) per error."""

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}:{line}: {where}: {message}" if line else
                f"{self.path}: {where}: {message}" for line, where, message in self.problems]


def load_config(path: str | Path) -> EdgeConfig:
    """Read and check a YAML config. Raises ``ConfigError`` (a ``BadInput``) naming the line
    of each problem: YAML syntax, duplicate or unknown keys, missing or bad values; a file that
    is not UTF-8 text, is over 1 MB or expands (YAML aliases) past 100,000 values is refused
    before anything walks it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise BadInput(f"{path}: cannot read the config ({err.strerror}); check the path") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [(None, "file", f"over {MAX_CONFIG_BYTES // 1_000_000} MB: "
                                                     "not a config; give the YAML file")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [(None, "file", f"not UTF-8 text (byte {err.start}): give "
                                                     "the YAML config, e.g. deploy/edge.yaml")]
                          ) from err
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        expanded = _expanded_size(root)
        if expanded > MAX_CONFIG_NODES:
            raise ConfigError(str(path), [(None, "YAML", f"expands to over {MAX_CONFIG_NODES:,} "
                                                         "values (aliases of aliases?): write "
                                                         "the config out plainly")])
        data = yaml.safe_load(text)
    except RecursionError as err:
        raise ConfigError(str(path), [(None, "YAML", "nested too deeply: write the config "
                                                     "out plainly")]) from err
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(str(path), [(None, "YAML", f"{str(err).split(';')[0]}: give a "
                                                     "plain number")]) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(str(path), [(mark.line + 1 if mark else None, "YAML",
                                       f"{problem}; fix the syntax")]) from err
    if root is None or not isinstance(data, dict):
        raise ConfigError(str(path), [(1, "file", "the config must be a YAML mapping with at "
                                                  "least 'streams:'; see deploy/edge.yaml")])
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise ConfigError(str(path), duplicates)
    try:
        config = EdgeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(str(path), [(_line_of(root, e["loc"]), _dotted(e["loc"]),
                                       _message(e)) for e in err.errors()]) from err
    return _resolve_paths(config, path.resolve().parent)


def _expanded_size(root: yaml.Node | None) -> int:
    """How many nodes ``root`` has once every alias is expanded, counted without expanding
    them (each node's size once, by identity): an alias bomb is caught in linear time."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a node that contains itself counts once (PyYAML refuses it)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_CONFIG_NODES + 1)
        return sizes[id(node)]

    return 0 if root is None else size(root)


def _duplicate_keys(node: yaml.Node, where: str = "") -> list[tuple[int | None, str, str]]:
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            inner = f"{where}.{name}" if where else name
            if name in seen:
                found.append((key.start_mark.line + 1, inner, "key given twice; keep one"))
            seen.add(name)
            found += _duplicate_keys(value, inner)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{where}[{i}]")
    return found


def _line_of(root: yaml.Node, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based YAML line of a pydantic error location (the key's line for a key).

    Locations may hold names that are not in the YAML (a union's tag such as 'mic', a
    model-level check): those are skipped, and a missing key reports its parent's line.
    """
    node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
    return line


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for i, part in enumerate(loc):
        if i and loc[i - 1] == "source" and part in ("mic", "file"):
            continue  # the union's tag, not a key of the YAML
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return ("unknown key; remove it or check its spelling (deploy/edge.yaml shows every "
                "key)")
    if kind == "missing":
        return "required, but missing"
    if kind == "string_pattern_mismatch":
        message = "use letters, digits, '_', '.' and '-' only (it goes into topics and file names)"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    secret = bool(error["loc"]) and "password" in str(error["loc"][-1])
    if kind != "value_error" and not secret and not isinstance(error.get("input"), dict | list):
        message += f" (got {error.get('input')!r})"
    return message


def _resolve_paths(config: EdgeConfig, base: Path) -> EdgeConfig:
    """Make relative paths relative to ``base`` (the config file's folder); absolute ones
    stay as written."""

    def fix(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else base / value

    config.models_dir = fix(config.models_dir) or config.models_dir
    config.state_dir = fix(config.state_dir) or config.state_dir
    config.outbox.path = fix(config.outbox.path)
    config.evidence.dir = fix(config.evidence.dir)
    for stream in config.streams:
        if stream.source.type == "file":
            stream.source.path = fix(stream.source.path) or stream.source.path
    if config.mqtt:
        config.mqtt.password_file = fix(config.mqtt.password_file)
        if config.mqtt.tls:
            tls = config.mqtt.tls
            tls.ca, tls.cert, tls.key = fix(tls.ca), fix(tls.cert), fix(tls.key)
    return config


# -- the single-stream case from CLI flags ------------------------------------------------------

FLAG_OF = {"source.device": "--mic", "source.path": "--file", "source.speed": "--speed",
           "machine": "--machine", "section": "--section", "models_dir": "--models",
           "mqtt.url": "--mqtt", "device": "--device", "node": "--node",
           "threads": "--threads", "state_dir": "--state-dir",
           "mqtt.username": "--mqtt-username", "mqtt.password_env": "--mqtt-password-env",
           "mqtt.password_file": "--mqtt-password-file", "mqtt.tls.ca": "--mqtt-ca",
           "metrics.port": "--metrics-port"}


def _flag_problems(err: ValidationError) -> BadInput:
    """The errors of a config built from flags, each named by its flag (where one maps)."""
    problems = []
    for error in err.errors():
        where = re.sub(r"^streams\[\d+\]\.", "", _dotted(error["loc"]))
        problems.append(f"{FLAG_OF.get(where, where)}: {_message(error)}")
    return BadInput("; ".join(problems))


def _ca_needs_tls(url: str) -> None:
    if urlsplit(url).scheme != "mqtts":
        raise BadInput(f"--mqtt-ca is the CA of a TLS broker, and the broker is {url} (plain "
                       "TCP): give it as mqtts://HOST:PORT (usually port 8883)")


def config_from_flags(*, machine: str, mic: int | str | None = None, file: str | Path | None = None,
                      section: int | str = 0, models: str | Path | None = None,
                      mqtt: str | None = None, device: str = "auto", speed: str = "realtime",
                      node: str | None = None, state_dir: str | Path | None = None,
                      mqtt_username: str | None = None, mqtt_password_env: str | None = None,
                      mqtt_password_file: str | Path | None = None,
                      mqtt_ca: str | Path | None = None,
                      threads: int | None = None) -> EdgeConfig:
    """The ``EdgeConfig`` for ``asd-edge run (--mic D | --file F) --machine M ...``.

    Exactly one of ``mic`` and ``file``. Paths are relative to the working directory. Raises
    ``BadInput`` naming the flag of each bad value.
    """
    if (mic is None) == (file is None):
        raise BadInput("give exactly one of --mic DEVICE and --file WAV (or --config YAML)")
    credentials = {"--mqtt-username": mqtt_username, "--mqtt-password-env": mqtt_password_env,
                   "--mqtt-password-file": mqtt_password_file, "--mqtt-ca": mqtt_ca}
    given = [flag for flag, value in credentials.items() if value is not None]
    if given and mqtt is None:
        raise BadInput(f"{given[0]} needs a broker: give --mqtt URL too")
    if mqtt_ca is not None and mqtt is not None:
        _ca_needs_tls(mqtt)
    source: dict[str, Any] = ({"type": "mic", "device": mic} if mic is not None
                              else {"type": "file", "path": str(file), "speed": speed})
    data: dict[str, Any] = {"device": device,
                            "streams": [{"source": source, "machine": machine,
                                         "section": section}]}
    if models is not None:
        data["models_dir"] = str(models)
    if node is not None:
        data["node"] = node
    if state_dir is not None:
        data["state_dir"] = str(state_dir)
    if threads is not None:
        data["threads"] = threads
    if mqtt is not None:
        data["mqtt"] = {"url": mqtt, "username": mqtt_username,
                        "password_env": mqtt_password_env,
                        "password_file": None if mqtt_password_file is None
                        else str(mqtt_password_file)}
        if mqtt_ca is not None:
            data["mqtt"]["tls"] = {"ca": str(mqtt_ca)}
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as err:
        raise _flag_problems(err) from err


def override_config(config: EdgeConfig, *, models: str | Path | None = None,
                    node: str | None = None, state_dir: str | Path | None = None,
                    device: str | None = None, threads: int | None = None,
                    mqtt: str | None = None, mqtt_username: str | None = None,
                    mqtt_password_env: str | None = None,
                    mqtt_password_file: str | Path | None = None,
                    mqtt_ca: str | Path | None = None, speed: str | None = None,
                    metrics_port: int | None = None, no_metrics: bool = False) -> EdgeConfig:
    """``config`` with each CLI flag that was given (not None) in place of the setting it maps
    to: a flag wins over the file (docs/EDGE.md, "Flags and the config file").

    ``models`` -> models_dir, ``node``, ``state_dir``, ``device``, ``threads``; ``mqtt`` ->
    mqtt.url (the file's other mqtt settings stay; with no mqtt section, a broker with the
    defaults); ``mqtt_username``; ``mqtt_password_env``/``mqtt_password_file`` replace the
    file's password source (both keys); ``mqtt_ca`` -> mqtt.tls.ca (the URL must be
    mqtts://); ``speed`` -> the speed of every file source;
    ``metrics_port``, ``no_metrics`` -> metrics.port, metrics.enabled. Paths are relative to
    the working directory. Each override is logged. Raises ``BadInput`` naming the flag of a
    bad value, and for a flag with nothing to apply to (``speed`` without a file source, MQTT
    credentials without a broker).
    """
    data = config.model_dump()
    changes: list[str] = []

    def put(flag: str, section: dict[str, Any], key: str, value: Any, where: str) -> None:
        if value is None:
            return
        if section.get(key) != value:
            changes.append(f"{flag} {value} over {where} {section.get(key)}")
        section[key] = value

    put("--models", data, "models_dir", None if models is None else Path(models), "models_dir")
    put("--node", data, "node", node, "node")
    put("--state-dir", data, "state_dir", None if state_dir is None else Path(state_dir),
        "state_dir")
    put("--device", data, "device", device, "device")
    put("--threads", data, "threads", threads, "threads")
    if mqtt is not None and data["mqtt"] is None:
        data["mqtt"] = {"url": mqtt}
        changes.append(f"--mqtt {mqtt} (the config has no mqtt section)")
    elif mqtt is not None:
        put("--mqtt", data["mqtt"], "url", mqtt, "mqtt.url")
    credentials = {"--mqtt-username": mqtt_username, "--mqtt-password-env": mqtt_password_env,
                   "--mqtt-password-file": mqtt_password_file, "--mqtt-ca": mqtt_ca}
    given = [flag for flag, value in credentials.items() if value is not None]
    if given and data["mqtt"] is None:
        raise BadInput(f"{given[0]} needs a broker, and the config has no mqtt section: "
                       "give --mqtt URL too (or add mqtt: url: to the config)")
    if given:
        put("--mqtt-username", data["mqtt"], "username", mqtt_username, "mqtt.username")
        if mqtt_password_env is not None or mqtt_password_file is not None:
            # one password source: the flag's replaces the file's, whichever key that used
            broker = data["mqtt"]
            was = [f"mqtt.{key} {broker[key]}" for key in ("password_env", "password_file")
                   if broker.get(key) is not None]
            broker["password_env"] = mqtt_password_env
            broker["password_file"] = None if mqtt_password_file is None \
                else Path(mqtt_password_file)
            flags = [f"{flag} {credentials[flag]}" for flag in given if flag != "--mqtt-username"]
            changes.append(f"{' '.join(flags)} over {' and '.join(was) or 'no password'}")
        if mqtt_ca is not None:
            _ca_needs_tls(data["mqtt"]["url"])
            data["mqtt"]["tls"] = data["mqtt"]["tls"] or {}
            put("--mqtt-ca", data["mqtt"]["tls"], "ca", Path(mqtt_ca), "mqtt.tls.ca")
    if speed is not None:
        files = [s for s in data["streams"] if s["source"]["type"] == "file"]
        if not files:
            raise BadInput("--speed paces file sources, and the config has none (its streams "
                           "are microphones): drop --speed")
        for stream in files:
            put("--speed", stream["source"], "speed", speed, f"{stream['name']}: source.speed")
    put("--metrics-port", data["metrics"], "port", metrics_port, "metrics.port")
    if no_metrics:
        put("--no-metrics", data["metrics"], "enabled", False, "metrics.enabled")
    try:
        updated = EdgeConfig.model_validate(data)
    except ValidationError as err:
        raise _flag_problems(err) from err
    for change in changes:
        logger.info("flag over config: %s", change)
    return updated
