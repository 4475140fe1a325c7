"""The MQTT alarm event is a contract: these tests freeze it (schema version 1).

Changing a key, a type or the time format breaks a plant's subscribers: that needs a new
``schema_version`` and a new frozen payload here, never an edit of this one.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edge.alarms import AlarmRule, StreamKey
from edge.alarms.rule import Transition
from edge.outputs.events import (
    OPTIONAL_EVENT_KEYS,
    SCHEMA_VERSION,
    AlarmEvent,
    EventWindow,
    ScoreMessage,
    SignalState,
    StreamState,
    make_event,
)

FROZEN_V1 = (
    '{"schema_version":1,"id":"0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11",'
    '"event_id":"a3e1f0d2-5b4c-4e6f-8a9b-0c1d2e3f4a5b","type":"raise",'
    '"time":"2026-11-28T12:01:01.500Z","node":"box-1","machine":"gearbox","section":"00",'
    '"score":0.71,"threshold":0.52,'
    '"window":{"start_utc":"2026-11-28T12:00:51.500Z","end_utc":"2026-11-28T12:01:01.500Z",'
    '"start_s":51.5,"end_s":61.5},'
    '"provider":"CPUExecutionProvider","explanation":{"subspace":"section"},'
    '"clip":"/var/lib/asd-edge/clips/gearbox_00_20261128T120101Z.wav"}'
)

KEYS = {"schema_version": int, "id": str, "event_id": str, "type": str, "time": str,
        "node": str, "machine": str, "section": str, "score": float, "threshold": float,
        "window": dict, "provider": str, "explanation": dict, "clip": (str, type(None))}
WINDOW_KEYS = {"start_utc": str, "end_utc": str, "start_s": (float, type(None)),
               "end_s": (float, type(None))}
UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def frozen_event() -> AlarmEvent:
    end = datetime(2026, 11, 28, 12, 1, 1, 500000, tzinfo=UTC)
    return AlarmEvent(
        id="0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11", event_id="a3e1f0d2-5b4c-4e6f-8a9b-0c1d2e3f4a5b",
        type="raise", time=end, node="box-1", machine="gearbox", section="00", score=0.71,
        threshold=0.52,
        window=EventWindow(start_utc=end - timedelta(seconds=10), end_utc=end, start_s=51.5,
                           end_s=61.5),
        provider="CPUExecutionProvider", explanation={"subspace": "section"},
        clip="/var/lib/asd-edge/clips/gearbox_00_20261128T120101Z.wav")


def test_payload_is_frozen_byte_for_byte() -> None:
    assert SCHEMA_VERSION == 1
    assert frozen_event().to_json().decode() == FROZEN_V1
    assert AlarmEvent.from_json(FROZEN_V1) == frozen_event()


def test_key_set_and_types_are_pinned() -> None:
    payload = json.loads(FROZEN_V1)
    assert set(payload) == set(KEYS)
    for key, kind in KEYS.items():
        assert isinstance(payload[key], kind), key
    assert set(payload["window"]) == set(WINDOW_KEYS)
    for key, kind in WINDOW_KEYS.items():
        assert isinstance(payload["window"][key], kind), key
    for value in (payload["time"], payload["window"]["start_utc"], payload["window"]["end_utc"]):
        assert UTC_ISO.match(value), value


def test_json_schema_requires_every_key_and_refuses_others() -> None:
    schema = AlarmEvent.model_json_schema()
    assert set(schema["properties"]) == set(KEYS) | OPTIONAL_EVENT_KEYS
    assert set(schema["required"]) == set(KEYS) - {"schema_version"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["type"]["enum"] == ["raise", "clear"]


@pytest.mark.parametrize("change", [
    {"extra_key": 1},                     # an unknown key
    {"schema_version": 2},                # another version
    {"type": "warning"},                  # not raise or clear
    {"score": "high"},                    # wrong type
])
def test_payloads_off_the_schema_are_refused(change: dict) -> None:
    payload = {**json.loads(FROZEN_V1), **change}
    with pytest.raises(ValidationError):
        AlarmEvent.model_validate_json(json.dumps(payload))
    missing = json.loads(FROZEN_V1)
    del missing["clip"]
    with pytest.raises(ValidationError):
        AlarmEvent.model_validate_json(json.dumps(missing))


def test_the_web_pages_links_are_optional_keys_beside_the_frozen_ones() -> None:
    """With the web page on, a raise carries its clip's and spectrogram's URLs as two more
    keys; every version 1 key keeps its value and place, and without them the payload is the
    frozen one (``test_payload_is_frozen_byte_for_byte``)."""
    event = frozen_event().model_copy(update={
        "clip_url": "http://box-1.plant:8090/clips/0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11.wav",
        "spectrogram_url":
            "http://box-1.plant:8090/clips/0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11.png"})
    payload = event.to_json().decode()
    assert payload == FROZEN_V1[:-1] + (
        ',"clip_url":"http://box-1.plant:8090/clips/0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11.wav",'
        '"spectrogram_url":'
        '"http://box-1.plant:8090/clips/0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11.png"}')
    assert AlarmEvent.from_json(payload) == event
    with pytest.raises(ValidationError):
        AlarmEvent.model_validate_json(payload.replace('"clip_url"', '"clip_link"'))


def _a_raise() -> tuple[StreamKey, Transition, EventWindow]:
    """The raise of an alarm rule after three hops over its threshold, and a mic's window."""
    stream = StreamKey("box-1", "fan", "02")
    rule = AlarmRule(stream, 0.5)
    start = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    transition = None
    for hop in range(3):
        transition = rule.update(0.5 * hop, 0.8, start + timedelta(seconds=0.5 * hop))
    assert transition is not None
    return stream, transition, EventWindow(start_utc=start, end_utc=start, start_s=None,
                                           end_s=None)


def test_make_event_links_only_an_episode_with_a_clip() -> None:
    stream, transition, window = _a_raise()

    def links(episode: str) -> tuple[str, str]:
        return f"http://h:1/clips/{episode}.wav", f"http://h:1/clips/{episode}.png"

    linked = json.loads(make_event(stream, transition, window, "CPU", clip="/c.wav",
                                   links=links).to_json())
    assert linked["clip_url"] == f"http://h:1/clips/{transition.episode_id}.wav"
    assert linked["spectrogram_url"] == f"http://h:1/clips/{transition.episode_id}.png"
    unlinked = json.loads(make_event(stream, transition, window, "CPU", links=links).to_json())
    assert OPTIONAL_EVENT_KEYS.isdisjoint(unlinked)  # evidence off: nothing to link


def test_times_are_utc_and_a_naive_time_is_refused() -> None:
    paris = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 28, 13, 0, 0, 123456, tzinfo=paris)
    window = EventWindow(start_utc=local, end_utc=local, start_s=None, end_s=None)
    assert window.model_dump(mode="json")["start_utc"] == "2026-11-28T12:00:00.123Z"
    with pytest.raises(ValidationError, match="time zone"):
        EventWindow(start_utc=datetime(2026, 1, 1), end_utc=local, start_s=None, end_s=None)


def test_make_event_from_an_alarm_rule_transition() -> None:
    stream, transition, window = _a_raise()
    first = make_event(stream, transition, window, "CPUExecutionProvider")
    second = make_event(stream, transition, window, "CPUExecutionProvider")
    assert first.id == second.id == transition.episode_id
    assert first.event_id != second.event_id  # each message its own id
    payload = json.loads(first.to_json())
    assert payload["type"] == "raise" and payload["section"] == "02"
    assert payload["window"]["start_s"] is None and payload["clip"] is None
    assert payload["explanation"] == {}


def test_state_and_score_messages_are_versioned() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    state = StreamState(node="n", machine="fan", section="00", state="alarm", id="x", time=now,
                        score=0.9, threshold=0.5)
    assert json.loads(state.to_json()) == {
        "schema_version": 1, "node": "n", "machine": "fan", "section": "00", "state": "alarm",
        "id": "x", "time": "2026-11-28T12:00:00.000Z", "score": 0.9, "threshold": 0.5}
    score = ScoreMessage(node="n", machine="fan", section="00", time=now, stream_s=10.0,
                         score=0.3, threshold=0.5)
    assert set(json.loads(score.to_json())) == {"schema_version", "node", "machine", "section",
                                                "time", "stream_s", "score", "threshold"}


def test_signal_message_is_frozen() -> None:
    """The retained ``.../signal`` payload Home Assistant's availability reads (``state``)."""
    since = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    signal = SignalState(node="n", machine="fan", section="00", state="no_signal",
                         reason="silence", since=since, time=since)
    assert json.loads(signal.to_json()) == {
        "schema_version": 1, "node": "n", "machine": "fan", "section": "00",
        "state": "no_signal", "reason": "silence", "since": "2026-11-28T12:00:00.000Z",
        "time": "2026-11-28T12:00:00.000Z"}
    with pytest.raises(ValueError):
        SignalState(node="n", machine="fan", section="00", state="no_signal",
                    reason="gremlins", since=since, time=since)
