"""MQTT output against a real Mosquitto: alarms are never lost, states are retained, the
node's status is online/offline (Home Assistant discovery: tests/test_ha_discovery.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _broker import Broker, Received, Subscriber, make_tls_files, running_broker

from edge.alarms import StreamKey
from edge.config import MqttConfig, TlsConfig, config_from_flags
from edge.errors import BadInput
from edge.outputs.events import AlarmEvent, EventWindow, ScoreMessage, StreamState
from edge.outputs.mqtt import MqttOutput

REPO = Path(__file__).resolve().parents[1]
NODE = "box-1"
STREAM = StreamKey(NODE, "gearbox", "00")
ALARM_TOPIC = f"asd-edge/{NODE}/gearbox/00/alarm"
STATE_TOPIC = f"asd-edge/{NODE}/gearbox/00/state"
STATUS_TOPIC = f"asd-edge/{NODE}/status"
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto on a free port (tests/_broker.py), killed after the test."""
    yield from running_broker(tmp_path)


def event(number: int, kind: str = "raise") -> AlarmEvent:
    now = datetime.now(UTC)
    return AlarmEvent(id=f"episode-{number // 2}", event_id=f"event-{number}", type=kind,
                      time=now, node=NODE, machine="gearbox", section="00", score=0.8,
                      threshold=0.5,
                      window=EventWindow(start_utc=now, end_utc=now, start_s=float(number),
                                         end_s=number + 10.0),
                      provider="CPUExecutionProvider", explanation={"n": number}, clip=None)


def state(kind: str, episode: str | None = None) -> StreamState:
    return StreamState(node=NODE, machine="gearbox", section="00", state=kind, id=episode,
                       time=datetime.now(UTC), score=0.7, threshold=0.5)


def event_ids(messages: list[Received]) -> set[str]:
    return {AlarmEvent.from_json(m.payload).event_id for m in messages if m.topic == ALARM_TOPIC}


def has_all(wanted: set[str]):
    return lambda messages: wanted <= event_ids(messages)


@pytest.fixture
def outputs(tmp_path: Path) -> Iterator[list[MqttOutput]]:
    """Outputs made by a test, closed after it (quickly; the test checks its own flushes)."""
    made: list[MqttOutput] = []
    yield made
    for output in made:
        output.close(timeout_s=0.2)  # a no-op for those the test closed itself


def start_output(outputs: list[MqttOutput], port: int, state_dir: Path,
                 **settings) -> MqttOutput:
    config = MqttConfig(url=f"mqtt://127.0.0.1:{port}", **{**FAST, **settings})
    output = MqttOutput(config, NODE, state_dir)
    output.start()
    outputs.append(output)
    return output


def wait_until(condition, timeout_s: float = 10.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_events_arrive_with_the_frozen_schema(broker: Broker, tmp_path: Path, protocol: str,
                                              outputs: list[MqttOutput]) -> None:
    subscriber = Subscriber(broker.port, ["asd-edge/#"])
    subscriber.wait_subscribed()
    output = start_output(outputs, broker.port, tmp_path / "state", protocol=protocol)
    sent = [event(0, "raise"), event(1, "clear")]
    for message in sent:
        output.publish_event(message)
    received = subscriber.wait_for(has_all({"event-0", "event-1"}), what="both events")
    alarms = [AlarmEvent.from_json(m.payload) for m in received if m.topic == ALARM_TOPIC]
    assert alarms == sent  # same order, every field intact
    assert [m.payload for m in subscriber.on(STATUS_TOPIC)] == [b"online"]
    wait_until(lambda: output.outbox_depth() == 0, what="the outbox to empty")
    assert output.connected
    subscriber.close()


def test_broker_down_at_start_delivers_once_it_comes_up(tmp_path: Path,
                                                        outputs: list[MqttOutput]) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    # A subscriber with a persistent session, saved by the broker: it gets what is published
    # while it reconnects, whichever client reaches the restarted broker first.
    subscriber = Subscriber(broker.port, [ALARM_TOPIC], client_id="plant", persistent=True)
    subscriber.wait_subscribed()
    broker.stop()
    try:
        output = start_output(outputs, broker.port, tmp_path / "state")
        for number in range(5):
            output.publish_event(event(number))
        time.sleep(0.3)
        assert not output.connected and output.outbox_depth() == 5
        broker.start()
        subscriber.wait_for(has_all({f"event-{n}" for n in range(5)}), what="5 events")
        wait_until(lambda: output.outbox_depth() == 0, what="the outbox to empty")
    finally:
        subscriber.close()
        broker.kill()


def test_broker_killed_and_restarted_mid_stream_loses_nothing(tmp_path: Path,
                                                              outputs: list[MqttOutput]) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC], client_id="plant", persistent=True)
    subscriber.wait_subscribed()
    try:
        output = start_output(outputs, broker.port, tmp_path / "state")
        for number in range(5):
            output.publish_event(event(number))
        subscriber.wait_for(has_all({f"event-{n}" for n in range(5)}), what="the first 5")
        broker.save()
        broker.kill()
        wait_until(lambda: not output.connected, what="the output to notice the broker is gone")
        for number in range(5, 10):
            output.publish_event(event(number))
        assert output.outbox_depth() == 5
        broker.start()
        received = subscriber.wait_for(has_all({f"event-{n}" for n in range(10)}),
                                       what="all 10 events")
        assert event_ids(received) == {f"event-{n}" for n in range(10)}
        wait_until(lambda: output.outbox_depth() == 0, what="the outbox to empty")
    finally:
        subscriber.close()
        broker.kill()


DAEMON = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from edge.outputs.events import AlarmEvent, EventWindow
    from edge.config import MqttConfig
    from edge.outputs.mqtt import MqttOutput

    port, state_dir, count = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    config = MqttConfig(url=f"mqtt://127.0.0.1:{port}", reconnect_min_s=0.05,
                        reconnect_max_s=0.3)
    output = MqttOutput(config, "box-1", state_dir)
    output.start()
    now = datetime.now(UTC)
    for number in range(count):
        output.publish_event(AlarmEvent(
            id="episode", event_id=f"event-{number}", type="raise", time=now, node="box-1",
            machine="gearbox", section="00", score=0.8, threshold=0.5,
            window=EventWindow(start_utc=now, end_utc=now, start_s=None, end_s=None),
            provider="CPUExecutionProvider", explanation={}, clip=None))
    print("ready", flush=True)
    time.sleep(60)
""")


def start_daemon(port: int, state_dir: Path, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", DAEMON, str(port), str(state_dir),
                                str(count)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def sigkill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def test_daemon_killed_while_the_broker_is_down_sends_everything_after_restart(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")  # not started yet: the broker is down
    state_dir = tmp_path / "state"
    first = start_daemon(broker.port, state_dir, count=7)
    sigkill(first)

    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC, STATUS_TOPIC])
    subscriber.wait_subscribed()
    second = start_daemon(broker.port, state_dir, count=0)
    try:
        received = subscriber.wait_for(has_all({f"event-{n}" for n in range(7)}),
                                       what="the 7 events of the killed daemon")
        assert event_ids(received) == {f"event-{n}" for n in range(7)}
        subscriber.wait_for(lambda m: any(x.payload == b"online" for x in m
                                          if x.topic == STATUS_TOPIC), what="online")
        # Killed again, now connected: the broker sends the last will, retained.
        sigkill(second)
        subscriber.wait_for(lambda m: [x.payload for x in m if x.topic == STATUS_TOPIC][-1:]
                            == [b"offline"], what="the last will")
        late = Subscriber(broker.port, [STATUS_TOPIC], client_id="late")
        retained = late.wait_for(lambda m: len(m) >= 1, what="the retained status")
        assert retained[0].payload == b"offline" and retained[0].retain
        late.close()
    finally:
        if second.poll() is None:
            second.kill()
        subscriber.close()
        broker.kill()


def test_clean_close_flushes_then_goes_offline(broker: Broker, tmp_path: Path,
                                               outputs: list[MqttOutput]) -> None:
    subscriber = Subscriber(broker.port, [ALARM_TOPIC, STATUS_TOPIC])
    subscriber.wait_subscribed()
    output = start_output(outputs, broker.port, tmp_path / "state")
    wait_until(lambda: output.connected, what="the connection")
    for number in range(20):
        output.publish_event(event(number))
    output.close(timeout_s=5.0)
    received = subscriber.wait_for(lambda m: [x.payload for x in m if x.topic == STATUS_TOPIC]
                                   == [b"online", b"offline"], what="online then offline")
    assert event_ids(received) == {f"event-{n}" for n in range(20)}
    late = Subscriber(broker.port, [STATUS_TOPIC], client_id="late")
    assert late.wait_for(lambda m: len(m) >= 1)[0].payload == b"offline"
    late.close()
    subscriber.close()


def test_state_is_retained_and_scores_are_published(broker: Broker, tmp_path: Path,
                                                     outputs: list[MqttOutput]) -> None:
    # Scores are opt-in per stream (score_messages): the daemon only hands over those.
    loud = start_output(outputs, broker.port, tmp_path / "loud", client_id="loud")
    wait_until(lambda: loud.connected, what="the connection")
    subscriber = Subscriber(broker.port, ["asd-edge/+/+/+/score"])
    subscriber.wait_subscribed()
    score = ScoreMessage(node=NODE, machine="gearbox", section="00", time=datetime.now(UTC),
                         stream_s=10.0, score=0.3, threshold=0.5)
    loud.publish_score(score)
    received = subscriber.wait_for(lambda m: len(m) >= 1, what="a score")
    time.sleep(0.2)
    assert len(subscriber.messages) == 1  # one score given, one published
    assert json.loads(received[0].payload)["score"] == 0.3
    assert loud.scores_dropped == 0
    subscriber.close()

    watcher = Subscriber(broker.port, [STATE_TOPIC], client_id="watcher")
    watcher.wait_subscribed()
    loud.publish_state(state("ok"))
    loud.publish_state(state("alarm", "episode-7"))
    # the broker has the alarm state before a late subscriber asks for what it retains
    watcher.wait_for(lambda m: any(b'"alarm"' in x.payload for x in m), what="the alarm state")
    watcher.close()
    late = Subscriber(broker.port, [STATE_TOPIC], client_id="late")
    retained = late.wait_for(lambda m: len(m) >= 1, what="the retained state")[0]
    assert retained.retain
    assert StreamState.model_validate_json(retained.payload).state == "alarm"
    assert json.loads(retained.payload)["id"] == "episode-7"
    late.close()


def test_scores_are_counted_as_dropped_while_offline(tmp_path: Path,
                                                     outputs: list[MqttOutput]) -> None:
    broker = Broker(tmp_path / "broker")  # never started: the broker is down
    output = start_output(outputs, broker.port, tmp_path / "state")
    output.publish_score(ScoreMessage(node=NODE, machine="gearbox", section="00",
                                      time=datetime.now(UTC), stream_s=10.0, score=0.3,
                                      threshold=0.5))
    assert not output.connected and output.scores_dropped == 1
    assert output.outbox_depth() == 0  # QoS 0: scores never go through the outbox


def test_state_is_published_again_after_a_broker_restart(tmp_path: Path,
                                                         outputs: list[MqttOutput]) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        output = start_output(outputs, broker.port, tmp_path / "state")
        output.publish_state(state("alarm", "episode-1"))  # maybe before the connection
        broker.kill()  # persistence not saved: the broker forgets every retained message
        broker.start()
        wait_until(lambda: output.connected, what="the reconnect")
        late = Subscriber(broker.port, [STATE_TOPIC, STATUS_TOPIC], client_id="late")
        late.wait_for(lambda m: {x.topic for x in m} == {STATE_TOPIC, STATUS_TOPIC},
                      what="retained state and status after the restart")
        assert json.loads(late.on(STATE_TOPIC)[0].payload)["state"] == "alarm"
        assert late.on(STATUS_TOPIC)[0].payload == b"online"
        late.close()
    finally:
        broker.kill()


def test_a_refused_connection_is_not_connected_and_says_why(
        tmp_path: Path, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(password_file), "edge", "s3cret"],
                   check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", password_file=password_file)
    broker.start()
    try:
        monkeypatch.setenv("ASD_EDGE_MQTT_PASSWORD", "wrong")
        with caplog.at_level(logging.ERROR, logger="edge.outputs.mqtt"):
            wrong = start_output(outputs, broker.port, tmp_path / "wrong", username="edge",
                                 password_env="ASD_EDGE_MQTT_PASSWORD", client_id="wrong")
            wrong.publish_event(event(0))
            wait_until(lambda: "refused the connection" in caplog.text, what="the refusal")
        assert not wrong.connected and wrong.outbox_depth() == 1
        assert "Not authorized" in caplog.text or "Bad user name or password" in caplog.text

        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        right = start_output(outputs, broker.port, tmp_path / "right", username="edge",
                             password_file=secret, client_id="right")
        right.publish_event(event(1))
        wait_until(lambda: right.connected and right.outbox_depth() == 0,
                   what="delivery with the right password")
    finally:
        broker.kill()


def test_tls_with_the_sites_ca_and_refused_with_another(
        tmp_path: Path, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture) -> None:
    tls = make_tls_files(tmp_path / "pki")
    stranger = make_tls_files(tmp_path / "other-pki")
    broker = Broker(tmp_path / "broker", tls=tls)
    broker.start()
    try:
        trusted = start_output(outputs, broker.port, tmp_path / "trusted", client_id="trusted",
                               tls=TlsConfig(ca=tls.ca))
        trusted.publish_event(event(0))
        wait_until(lambda: trusted.connected and trusted.outbox_depth() == 0,
                   what="delivery over TLS")
        with caplog.at_level(logging.WARNING, logger="edge.outputs.mqtt"):
            untrusted = start_output(outputs, broker.port, tmp_path / "untrusted",
                                     client_id="untrusted", tls=TlsConfig(ca=stranger.ca))
            untrusted.publish_event(event(1))
            wait_until(lambda: "failed verification" in caplog.text, what="the TLS failure")
        assert not untrusted.connected and untrusted.outbox_depth() == 1
    finally:
        broker.kill()
    with pytest.raises(BadInput, match="ca="):
        MqttOutput(MqttConfig(url="mqtts://127.0.0.1",
                              tls=TlsConfig(ca=tmp_path / "missing.crt")), NODE,
                   tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_secrets_never_come_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="password_env or password_file"):
        config_from_flags(machine="gearbox", mic=0, mqtt="mqtt://edge:s3cret@broker.local:1883")
    config = MqttConfig(url="mqtts://broker.local", username="edge")
    assert (config.host, config.port, config.username) == ("broker.local", 8883, "edge")
    assert config.use_tls and not (config.tls or TlsConfig()).insecure
    with pytest.raises(BadInput, match="ASD_EDGE_NOT_SET.* not set"):
        MqttOutput(MqttConfig(url="mqtt://127.0.0.1", username="u",
                              password_env="ASD_EDGE_NOT_SET"), NODE, tmp_path / "state")
    assert not (tmp_path / "state").exists()
    with pytest.raises(BadInput, match="mqtt://HOST"):
        config_from_flags(machine="gearbox", mic=0, mqtt="tcp://broker:1883")
