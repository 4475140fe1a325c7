"""Home Assistant MQTT discovery (issue 15 item 3), checked against the keys Home Assistant
documents for each entity type, and against a real Mosquitto: the node and unit devices are
announced (again when Home Assistant restarts), and a stream's entities go unavailable within
seconds of its audio going silent or its microphone being gone, as Home Assistant would
compute it from the discovery config (its availability list, templates and mode).

The key tables come from the configuration variables of home-assistant.io's
``binary_sensor.mqtt``, ``sensor.mqtt`` and ``image.mqtt`` pages (and the ``origin`` block of
the MQTT discovery page), with ``object_id`` replaced by ``default_entity_id`` as Home
Assistant 2025.10 did (``object_id`` stops working in 2026.4). ``platform`` is only for
device-based discovery messages, which this project does not send.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile as sf
from _broker import Broker, Received, Subscriber, running_broker
from _pipeline import MACHINE, stats_setup
from _virtual_mic import virtual_mic_env, write_infile

import edge
from edge.alarms import StreamKey
from edge.audio import SAMPLE_RATE, read_audio
from edge.config import MqttConfig
from edge.outputs.discovery import StreamTopics, node_config, stream_configs
from edge.outputs.events import StreamState
from edge.outputs.mqtt import MqttOutput

REPO = Path(__file__).resolve().parents[1]
NODE = "box-1"
STREAM = StreamKey(NODE, "gearbox", "00")

ENTITY = {"availability", "availability_mode", "availability_template", "availability_topic",
          "device", "enabled_by_default", "encoding", "entity_category", "entity_picture",
          "icon", "json_attributes_template", "json_attributes_topic", "name",
          "default_entity_id", "unique_id", "origin"}
ALLOWED = {
    "binary_sensor": ENTITY | {"device_class", "expire_after", "force_update", "off_delay",
                               "payload_available", "payload_not_available", "payload_off",
                               "payload_on", "qos", "state_topic", "value_template"},
    "sensor": ENTITY | {"device_class", "expire_after", "force_update",
                        "last_reset_value_template", "options", "payload_available",
                        "payload_not_available", "suggested_display_precision", "qos",
                        "state_class", "state_topic", "unit_of_measurement", "value_template"},
    "image": ENTITY | {"content_type", "image_encoding", "image_topic", "url_template",
                       "url_topic"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "image": set()}
DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
          "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
          "via_device"}
AVAILABILITY = {"payload_available", "payload_not_available", "topic", "value_template"}
ORIGIN = {"name", "sw_version", "support_url"}


def check_documented(component: str, config: dict[str, Any]) -> None:
    """``config`` uses only keys Home Assistant documents for ``component``."""
    assert set(config) <= ALLOWED[component], set(config) - ALLOWED[component]
    assert REQUIRED[component] <= set(config)
    assert "object_id" not in config  # deprecated: default_entity_id
    assert config["default_entity_id"].startswith(f"{component}.")
    assert set(config["device"]) <= DEVICE and config["device"]["identifiers"]
    assert set(config["origin"]) <= ORIGIN and config["origin"]["name"] == "asd-edge"
    assert config["origin"]["sw_version"] == edge.__version__
    for entry in config.get("availability", []):
        assert set(entry) <= AVAILABILITY and "topic" in entry
    if component == "image":  # exactly one of the two, as the docs demand
        assert ("image_topic" in config) != ("url_topic" in config)
        assert "content_type" not in config or "image_topic" in config
    if "availability" in config:
        assert "availability_topic" not in config  # "must not be used together"


def topics(stream: StreamKey) -> StreamTopics:
    base = f"asd-edge/{stream.node}/{stream.machine}/{stream.section}"
    return StreamTopics(f"{base}/state", f"{base}/score", f"{base}/signal",
                        f"{base}/spectrogram")


def test_discovery_payloads_use_only_documented_keys() -> None:
    status = f"asd-edge/{NODE}/status"
    node_topic, node = node_config(NODE, status)
    assert node_topic == f"homeassistant/binary_sensor/{NODE}/status/config"
    check_documented("binary_sensor", node)
    configs = stream_configs(STREAM, topics(STREAM), status)
    components = [topic.split("/")[1] for topic, _ in configs]
    assert components == ["binary_sensor", "sensor", "image"]
    for component, (_, config) in zip(components, configs, strict=True):
        check_documented(component, config)
        # one device per unit, routed through the node's device
        assert config["device"]["via_device"] == node["device"]["identifiers"][0]
        assert config["device"]["identifiers"] == [f"asd_edge_{NODE}_gearbox_00"]
        # available while the node is online AND the stream's signal is ok
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [status, topics(STREAM).signal]
    problem, score, image = (config for _, config in configs)
    assert problem["device_class"] == "problem"
    assert problem["unique_id"] == f"asd_edge_{NODE}_gearbox_00"  # as before: no new entity
    assert score["state_class"] == "measurement"
    assert score["state_topic"] == topics(STREAM).score
    assert image["image_topic"] == topics(STREAM).spectrogram
    assert image["content_type"] == "image/png"
    assert len({c["unique_id"] for _, c in configs} | {node["unique_id"]}) == 4


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's template gives for a message (``value``, ``value_json``)."""
    value = payload.decode()
    try:
        value_json = json.loads(value)
    except ValueError:
        value_json = None
    return jinja2.Environment().from_string(template).render(value=value,
                                                             value_json=value_json).strip()


class Availability:
    """An entity's availability as Home Assistant computes it from its discovery config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.entries = config["availability"]
        self.mode = config.get("availability_mode", "latest")
        self.seen: dict[int, bool] = {}

    def take(self, topic: str, payload: bytes) -> None:
        for index, entry in enumerate(self.entries):
            if entry["topic"] != topic:
                continue
            template = entry.get("value_template")
            value = render(template, payload) if template else payload.decode()
            if value == entry.get("payload_available", "online"):
                self.seen[index] = True
            elif value == entry.get("payload_not_available", "offline"):
                self.seen[index] = False

    @property
    def available(self) -> bool:
        assert self.mode == "all"
        return len(self.seen) == len(self.entries) and all(self.seen.values())


class TimedSubscriber(Subscriber):
    """A subscriber that also notes when (``time.time()``) each message arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arrived: list[float] = []
        super().__init__(*args, **kwargs)

    def _on_message(self, client, userdata, message) -> None:
        with self.condition:
            self.arrived.append(time.time())
        super()._on_message(client, userdata, message)

    def timeline(self, availability: Availability) -> list[tuple[float, bool]]:
        """(arrival time, available) at each change of the entity's availability."""
        with self.condition:
            messages = list(zip(self.arrived, self.messages, strict=False))
        changes: list[tuple[float, bool]] = []
        for arrived, message in messages:
            availability.take(message.topic, message.payload)
            if not changes or changes[-1][1] != availability.available:
                changes.append((arrived, availability.available))
        return changes


@pytest.fixture
def broker(tmp_path: Path):
    yield from running_broker(tmp_path)


def test_discovery_announces_both_devices_and_again_when_home_assistant_starts(
        broker: Broker, tmp_path: Path) -> None:
    subscriber = Subscriber(broker.port, ["homeassistant/#"])
    subscriber.wait_subscribed()
    output = MqttOutput(MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}"), NODE,
                        tmp_path / "state")
    output.start()
    try:
        output.publish_state(StreamState(node=NODE, machine="gearbox", section="00",
                                         state="ok", id=None, time=datetime.now(UTC),
                                         score=None, threshold=1.0))
        wanted = {f"homeassistant/binary_sensor/{NODE}/status/config",
                  f"homeassistant/binary_sensor/{NODE}/gearbox_00/config",
                  f"homeassistant/sensor/{NODE}/gearbox_00_score/config",
                  f"homeassistant/image/{NODE}/gearbox_00_spectrogram/config"}
        first = subscriber.wait_for(lambda m: {x.topic for x in m} >= wanted,
                                    what="the discovery configs")
        # the topic of earlier releases is cleared (an empty retained message), not reused
        legacy = f"homeassistant/binary_sensor/{NODE}_gearbox_00/config"
        assert [m.payload for m in first if m.topic == legacy] == [b""]
        first = [m for m in first if m.topic in wanted]
        configs = {m.topic: m.json() for m in first}
        late = Subscriber(broker.port, ["homeassistant/#"], client_id="late")
        kept = late.wait_for(lambda m: {x.topic for x in m} >= wanted, what="retained configs")
        assert all(m.retain for m in kept)
        late.close()
        for topic, config in configs.items():
            check_documented(topic.split("/")[1], config)
        count = len(first)
        home_assistant = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha")
        home_assistant.connect("127.0.0.1", broker.port)
        home_assistant.loop_start()
        home_assistant.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        def announced(messages: list[Received]) -> list[Received]:
            return [m for m in messages if m.topic in wanted]

        again = announced(subscriber.wait_for(lambda m: len(announced(m)) >= 2 * count,
                                              what="the re-announcement"))
        assert {m.topic: m.json() for m in again[count:]} == configs
        home_assistant.disconnect()
        home_assistant.loop_stop()
    finally:
        subscriber.close()
        output.close(timeout_s=1.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return stats_setup(tmp_path_factory.mktemp("ha"))


def start_daemon(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = env or {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "edge.cli", "run", *argv], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def problem_config(subscriber: Subscriber, node: str, machine: str) -> dict[str, Any]:
    topic = f"homeassistant/binary_sensor/{node}/{machine}_00/config"
    messages = subscriber.wait_for(lambda ms: any(m.topic == topic for m in ms),
                                   what="the discovery config", timeout_s=30)
    return next(m.json() for m in messages if m.topic == topic)


def signal_since(message: Received) -> float:
    return datetime.fromisoformat(message.json()["since"].replace("Z", "+00:00")).timestamp()


def test_silent_audio_makes_the_stream_unavailable_within_seconds(setup, broker: Broker,
                                                                   tmp_path: Path) -> None:
    """5 s of sound, 8 s of digital silence, 5 s of sound, at real-time pace: Home Assistant's
    entities of the stream go unavailable about no_signal_seconds (2 s) after the silence
    begins and come back about ok_seconds (1 s) after the sound does."""
    wave = read_audio(setup.stream)
    audio = np.concatenate([wave[:5 * SAMPLE_RATE], np.zeros(8 * SAMPLE_RATE, np.float32),
                            wave[5 * SAMPLE_RATE:10 * SAMPLE_RATE]])
    path = tmp_path / "silent.wav"
    sf.write(path, audio, SAMPLE_RATE)
    subscriber = TimedSubscriber(broker.port, ["homeassistant/#", "asd-edge/#"])
    subscriber.wait_subscribed()
    daemon = start_daemon(["--file", str(path), "--machine", MACHINE, "--models",
                           str(setup.models), "--mqtt", broker.url, "--node", "ha",
                           "--state-dir", str(tmp_path / "state"), "--no-metrics"])
    try:
        config = problem_config(subscriber, "ha", MACHINE)
        signal_topic = f"asd-edge/ha/{MACHINE}/00/signal"
        subscriber.wait_for(lambda ms: len([m for m in ms if m.topic == signal_topic]) >= 3,
                            what="ok, no_signal, ok", timeout_s=40)
        output, _ = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, output[-2000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
    changes = subscriber.timeline(Availability(config))
    assert [available for _, available in changes][:4] == [False, True, False, True]
    signals = subscriber.on(signal_topic)
    silent_since, sound_since = signal_since(signals[1]), signal_since(signals[2])
    assert sound_since - silent_since == pytest.approx(8.0, abs=0.2)
    went_offline = changes[2][0] - silent_since
    came_back = changes[3][0] - sound_since
    print(f"unavailable {went_offline:.2f} s after the silence began, available again "
          f"{came_back:.2f} s after the sound returned")
    assert 1.5 <= went_offline <= 4.0
    assert 0.5 <= came_back <= 3.0
    subscriber.close()


MISSING_MIC = """
node: mic
models_dir: {models}
state_dir: {state}
streams:
  - source: {{type: mic, device: no-such-microphone}}
    machine: {machine}
    section: 0
mqtt: {{url: "{url}"}}
metrics: {{enabled: false}}
"""


@pytest.mark.slow  # PortAudio and the daemon in a subprocess
def test_a_missing_microphone_makes_the_stream_unavailable_within_seconds(
        setup, broker: Broker, tmp_path: Path) -> None:
    """The microphone is not there (unplugged, or the wrong name): device_lost, and the
    stream's entities unavailable, no_signal_seconds after the daemon looked for it."""
    env = virtual_mic_env(tmp_path, write_infile(tmp_path / "mic.raw",
                                                 np.zeros(1600, np.float32)))
    config = tmp_path / "edge.yaml"
    config.write_text(textwrap.dedent(MISSING_MIC.format(
        models=setup.models, state=tmp_path / "state", machine=MACHINE, url=broker.url)))
    subscriber = TimedSubscriber(broker.port, ["homeassistant/#", "asd-edge/#"])
    subscriber.wait_subscribed()
    daemon = start_daemon(["--config", str(config)], env)
    try:
        discovery = problem_config(subscriber, "mic", MACHINE)
        signal_topic = f"asd-edge/mic/{MACHINE}/00/signal"
        messages = subscriber.wait_for(
            lambda ms: any(m.topic == signal_topic and m.json()["state"] == "no_signal"
                           for m in ms), what="no_signal", timeout_s=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, output[-2000:]
    lost = next(m for m in messages if m.topic == signal_topic
                and m.json()["state"] == "no_signal")
    assert lost.json()["reason"] == "device_lost"
    changes = subscriber.timeline(Availability(discovery))
    offline = [t for t, available in changes if not available][-1]
    assert offline - signal_since(lost) <= 4.0
    assert "no signal: the capture device is gone" in output
    subscriber.close()


def test_the_latest_alarms_spectrogram_is_the_image_entitys_picture(setup, broker: Broker,
                                                                    tmp_path: Path) -> None:
    """A replay with a fault: once its evidence clip is written, the clip's spectrogram goes
    retained to the image entity's topic as a PNG (what Home Assistant shows)."""
    from edge.cli import main

    assert main(["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
                 str(setup.models), "--speed", "max", "--mqtt", broker.url, "--node", "img",
                 "--state-dir", str(tmp_path / "state"), "--no-metrics"]) == 0
    topic = f"asd-edge/img/{MACHINE}/00/spectrogram"
    late = Subscriber(broker.port, [topic, "homeassistant/image/#"], client_id="late")
    messages = late.wait_for(lambda ms: len(ms) >= 2, what="the image config and picture")
    config = next(m.json() for m in messages if m.topic.startswith("homeassistant/"))
    assert config["image_topic"] == topic and config["content_type"] == "image/png"
    picture = next(m for m in messages if m.topic == topic)
    assert picture.retain and picture.payload.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(picture.payload[16:20], "big"), \
        int.from_bytes(picture.payload[20:24], "big")
    assert (height, 100 <= width <= 600) == (256, True)
    late.close()
