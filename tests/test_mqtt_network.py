"""The broker connection against a real Mosquitto: an alarm goes out within seconds of the
broker's return however long it was away, each cause of a failed connection (TLS scheme,
certificate, credentials) is logged in one line naming the fix, and the shipped broker config
(deploy/mosquitto.conf + mosquitto.acl) keeps a node from publishing for another node."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from _broker import Broker, Subscriber, make_client_cert, make_tls_files, shipped_broker

from edge.config import MqttConfig, TlsConfig
from edge.outputs.events import AlarmEvent, EventWindow, StreamState
from edge.outputs.mqtt import MqttOutput

NODE = "box-1"
ALARM_TOPIC = f"asd-edge/{NODE}/gearbox/00/alarm"
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3}


def event(number: int, node: str = NODE) -> AlarmEvent:
    now = datetime.now(UTC)
    return AlarmEvent(id=f"episode-{number}", event_id=f"event-{number}", type="raise",
                      time=now, node=node, machine="gearbox", section="00", score=0.8,
                      threshold=0.5,
                      window=EventWindow(start_utc=now, end_utc=now, start_s=None, end_s=None),
                      provider="CPUExecutionProvider", explanation={}, clip=None)


def event_ids(messages, topic: str = ALARM_TOPIC) -> set[str]:
    return {AlarmEvent.from_json(m.payload).event_id for m in messages if m.topic == topic}


def wait_until(condition, timeout_s: float = 10.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def outputs() -> Iterator[list[MqttOutput]]:
    made: list[MqttOutput] = []
    yield made
    for output in made:
        output.close(timeout_s=0.2)


def start_output(outputs: list[MqttOutput], url: str, state_dir: Path, node: str = NODE,
                 **settings) -> MqttOutput:
    output = MqttOutput(MqttConfig(url=url, **settings), node, state_dir)
    output.start()
    outputs.append(output)
    return output


# -- MQTT reconnect ------------------------------------------------------------------------

# paho's backoff alone (1 s doubling, the defaults) tries at about 1, 3, 7 and 15 s into an
# outage: a broker back after 9 s waited about 6 s for it (and up to 60 s in a long outage,
# 119 s seen in a flapping test). Now a try while nothing answers is one TCP connect, repeated
# every reconnect_probe_s (1 s).
OUTAGE_S = 9.0
PROMPT_S = 3.0


@pytest.mark.slow
def test_an_alarm_raised_while_the_broker_is_down_goes_out_soon_after_it_is_back(
        tmp_path: Path, outputs: list[MqttOutput]) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC], client_id="plant", persistent=True)
    try:
        subscriber.wait_subscribed()
        output = start_output(outputs, broker.url, tmp_path / "state")  # default delays
        wait_until(lambda: output.connected, what="the first connection")
        broker.stop()  # SIGTERM: the subscriber's persistent session is saved
        wait_until(lambda: not output.connected, what="the disconnect")
        output.publish_event(event(0))
        time.sleep(OUTAGE_S)
        assert not output.connected and output.outbox_depth() == 1
        broker.start()  # the same port
        back = time.monotonic()
        subscriber.wait_for(lambda messages: "event-0" in event_ids(messages),
                            timeout_s=70.0, what="the alarm raised during the outage")
        delay = time.monotonic() - back
        assert delay < PROMPT_S, f"the alarm went out {delay:.1f} s after the broker was back"
        wait_until(lambda: output.outbox_depth() == 0, what="the outbox to empty")
    finally:
        subscriber.close()
        broker.kill()


# -- TLS and credentials: the cause and the fix, in one line -------------------------------

def test_tls_diagnostics_name_the_cause_and_the_fix(
        tmp_path: Path, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture) -> None:
    pki = make_tls_files(tmp_path / "pki")
    stranger = make_tls_files(tmp_path / "stranger-pki")
    other_name = make_tls_files(tmp_path / "other-name-pki", host="10.9.9.9")
    tls_broker = Broker(tmp_path / "tls-broker", tls=pki)
    renamed = Broker(tmp_path / "renamed-broker", tls=other_name)
    plain_broker = Broker(tmp_path / "plain-broker")
    for broker in (tls_broker, renamed, plain_broker):
        broker.start()
    tls_url = f"mqtts://127.0.0.1:{tls_broker.port}"
    try:
        with caplog.at_level(logging.INFO, logger="edge.outputs.mqtt"):
            good = start_output(outputs, tls_url, tmp_path / "good", client_id="good",
                                tls=TlsConfig(ca=pki.ca), **FAST)
            good.publish_event(event(0))
            wait_until(lambda: good.connected and good.outbox_depth() == 0,
                       what="delivery over TLS with the broker's CA")

            wrong_ca = start_output(outputs, tls_url, tmp_path / "wrong-ca",
                                    client_id="wrong-ca", tls=TlsConfig(ca=stranger.ca), **FAST)
            wait_until(lambda: "failed verification" in caplog.text, what="the CA message")
            line = lines_with(caplog, "failed verification")
            assert str(stranger.ca) in line and "give the CA that signed" in line
            assert f"127.0.0.1:{tls_broker.port}" in line

            start_output(outputs, f"mqtts://127.0.0.1:{renamed.port}", tmp_path / "renamed",
                         client_id="renamed", tls=TlsConfig(ca=other_name.ca), **FAST)
            wait_until(lambda: "is not for the name" in caplog.text, what="the name message")
            assert "'127.0.0.1'" in lines_with(caplog, "is not for the name")

            plain = start_output(outputs, f"mqtt://127.0.0.1:{tls_broker.port}",
                                 tmp_path / "plain", client_id="plain", **FAST)
            wait_until(lambda: "speaks TLS" in caplog.text, what="the plain-at-TLS message")
            assert f"use mqtts://127.0.0.1:{tls_broker.port}" in lines_with(caplog, "speaks TLS")

            start_output(outputs, f"mqtts://127.0.0.1:{plain_broker.port}", tmp_path / "tls",
                         client_id="tls", tls=TlsConfig(ca=pki.ca), **FAST)
            wait_until(lambda: "TLS handshake" in caplog.text, what="the TLS-at-plain message")
            assert f"use mqtt://127.0.0.1:{plain_broker.port}" in \
                lines_with(caplog, "TLS handshake")

            time.sleep(1.0)  # several retries: each cause is logged once, not at every retry
        assert not wrong_ca.connected and not plain.connected
        assert "cannot reach" not in caplog.text  # a broker that answered is not "down"
        for cause in ("failed verification", "is not for the name", "speaks TLS",
                      "TLS handshake"):
            assert len([r for r in caplog.records if cause in r.getMessage()]) == 1, cause
    finally:
        for broker in (tls_broker, renamed, plain_broker):
            broker.kill()


def lines_with(caplog: pytest.LogCaptureFixture, text: str) -> str:
    found = [r.getMessage() for r in caplog.records if text in r.getMessage()]
    assert found, text
    assert "\n" not in found[0]
    return found[0]


def test_a_broker_that_wants_client_certificates_takes_ours_and_says_when_one_is_missing(
        tmp_path: Path, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture) -> None:
    """Mutual TLS (Mosquitto ``require_certificate``, the certificate's name as the user): a
    node with mqtt.tls.cert/key of the broker's CA delivers; one without is refused, and the
    log says which settings to give."""
    pki = make_tls_files(tmp_path / "pki")
    cert, key = make_client_cert(pki, NODE)
    broker = Broker(tmp_path / "broker", tls=pki, client_certificates=True)
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        with caplog.at_level(logging.INFO, logger="edge.outputs.mqtt"):
            node = start_output(outputs, url, tmp_path / "node", client_id="node",
                                tls=TlsConfig(ca=pki.ca, cert=cert, key=key), **FAST)
            node.publish_event(event(0))
            wait_until(lambda: node.connected and node.outbox_depth() == 0,
                       what="delivery with a client certificate")
            bare = start_output(outputs, url, tmp_path / "bare", client_id="bare",
                                tls=TlsConfig(ca=pki.ca), **FAST)
            bare.publish_event(event(1))
            wait_until(lambda: "client certificate" in caplog.text,
                       what="the client-certificate message")
            assert not bare.connected and bare.outbox_depth() == 1
            line = lines_with(caplog, "wants a client certificate")
            assert "mqtt.tls.cert" in line and "mqtt.tls.key" in line
            strange_cert, strange_key = make_client_cert(make_tls_files(tmp_path / "other"),
                                                         "intruder")
            start_output(outputs, url, tmp_path / "intruder", client_id="intruder",
                         tls=TlsConfig(ca=pki.ca, cert=strange_cert, key=strange_key), **FAST)
            wait_until(lambda: "refused the client certificate" in caplog.text,
                       what="the untrusted-certificate message")
            assert str(strange_cert) in lines_with(caplog, "refused the client certificate")
    finally:
        broker.kill()


def test_wrong_credentials_say_which_setting_to_fix(
        tmp_path: Path, outputs: list[MqttOutput], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(password_file), "edge", "s3cret"],
                   check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", password_file=password_file)
    broker.start()
    monkeypatch.setenv("ASD_EDGE_MQTT_PASSWORD", "wrong")
    try:
        with caplog.at_level(logging.ERROR, logger="edge.outputs.mqtt"):
            start_output(outputs, broker.url, tmp_path / "anonymous", client_id="anonymous",
                         **FAST)
            wait_until(lambda: "refuses anonymous clients" in caplog.text,
                       what="the anonymous refusal")
            wrong = start_output(outputs, broker.url, tmp_path / "wrong", username="edge",
                                 password_env="ASD_EDGE_MQTT_PASSWORD", client_id="wrong",
                                 **FAST)
            wait_until(lambda: "for user 'edge'" in caplog.text, what="the user's refusal")
            time.sleep(0.5)
        line = lines_with(caplog, "for user 'edge'")
        assert "refused the connection" in line and "check the password" in line
        assert not wrong.connected
        assert len([r for r in caplog.records if "for user 'edge'" in r.getMessage()]) == 1
    finally:
        broker.kill()


# -- Broker ACL: the shipped config ---------------------------------------------------------

def test_the_shipped_acl_keeps_each_node_to_its_own_prefix(
        tmp_path: Path, outputs: list[MqttOutput]) -> None:
    pki = make_tls_files(tmp_path / "pki")
    broker = shipped_broker(tmp_path / "broker", {"box-a": "pw-a", "box-b": "pw-b",
                                                  "scada": "pw-scada", "homeassistant": "pw-ha"},
                            pki)
    plain_port, tls_port = broker.port, broker.tls_port
    broker.start()
    scada = Subscriber(plain_port, ["asd-edge/#"], client_id="scada", username="scada",
                       password="pw-scada")
    home_assistant = Subscriber(plain_port, ["homeassistant/#"], client_id="ha",
                                username="homeassistant", password="pw-ha")
    try:
        scada.wait_subscribed()
        home_assistant.wait_subscribed()
        assert connack(plain_port, None, None) == "Not authorized"  # anonymous refused

        # Node A's daemon, over the shipped TLS listener, publishes under its own prefix.
        secret = tmp_path / "box-a-password"
        secret.write_text("pw-a\n")
        box_a = start_output(outputs, f"mqtts://127.0.0.1:{tls_port}", tmp_path / "state-a",
                             node="box-a", username="box-a", password_file=secret,
                             tls=TlsConfig(ca=pki.ca), client_id="box-a", **FAST)
        box_a.publish_event(event(1, node="box-a"))
        a_alarm = "asd-edge/box-a/gearbox/00/alarm"
        scada.wait_for(lambda messages: "event-1" in event_ids(messages, a_alarm),
                       what="node A's alarm")
        # ... and announces its devices to Home Assistant under its own node level
        box_a.publish_state(StreamState(node="box-a", machine="gearbox", section="00",
                                        state="ok", id=None, time=datetime.now(UTC),
                                        score=None, threshold=1.0))
        a_problem = "homeassistant/binary_sensor/box-a/gearbox_00/config"
        home_assistant.wait_for(lambda ms: any(m.topic == a_problem for m in ms),
                                what="node A's discovery config")

        # Node A forges node B's alarm and status; the broker acknowledges and drops them.
        b_alarm, b_status = "asd-edge/box-b/gearbox/00/alarm", "asd-edge/box-b/status"
        forger = client(plain_port, "box-a", "pw-a", "box-a-forger")
        b_problem = "homeassistant/binary_sensor/box-b/gearbox_00/config"
        for topic, payload in [(b_alarm, event(66, node="box-b").to_json()),
                               (b_status, b"offline"), (b_problem, b"{}")]:
            info = forger.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=5)
            assert info.is_published()
        forger.disconnect()
        forger.loop_stop()

        # Node B's own alarm arrives, and after it (the broker routes in order) nothing forged.
        box_b = client(plain_port, "box-b", "pw-b", "box-b")
        box_b.publish(b_alarm, event(2, node="box-b").to_json(), qos=1).wait_for_publish(5)
        box_b.disconnect()
        box_b.loop_stop()
        scada.wait_for(lambda messages: "event-2" in event_ids(messages, b_alarm),
                       what="node B's own alarm")
        time.sleep(0.3)
        assert event_ids(scada.messages, b_alarm) == {"event-2"}
        assert scada.on(b_status) == []
        assert home_assistant.on(b_problem) == []  # nor a discovery config for node B
    finally:
        home_assistant.close()
        scada.close()
        broker.kill()


def client(port: int, username: str, password: str, client_id: str) -> mqtt.Client:
    """A connected paho client logged in as ``username`` on the plain loopback listener."""
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    paho.username_pw_set(username, password)
    paho.connect("127.0.0.1", port)
    paho.loop_start()
    deadline = time.monotonic() + 5
    while not paho.is_connected():
        assert time.monotonic() < deadline, f"{username} could not connect"
        time.sleep(0.01)
    return paho


def connack(port: int, username: str | None, password: str | None) -> str:
    """The broker's answer to a CONNECT (the reason code's name)."""
    answers: list[str] = []
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe")
    if username is not None:
        paho.username_pw_set(username, password)
    paho.on_connect = lambda c, u, f, reason_code, p: answers.append(reason_code.getName())
    paho.connect("127.0.0.1", port)
    paho.loop_start()
    try:
        wait_until(lambda: bool(answers), timeout_s=5, what="the CONNACK")
    finally:
        paho.disconnect()
        paho.loop_stop()
    return answers[0]
