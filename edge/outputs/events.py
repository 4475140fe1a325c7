"""The messages the daemon emits: alarm events, the state of a stream, its signal state,
per-hop scores.

The alarm event is the contract plant systems build on: versioned by ``schema_version`` and
frozen by ``tests/test_event_schema.py``. Adding, removing or retyping a required key means a
new schema version. The optional keys (``OPTIONAL_EVENT_KEYS``: ``clip_url`` and
``spectrogram_url``, when the web page is on) are left out of the payload when unset, so a
payload without them is byte for byte the frozen version 1. Times are UTC, ISO 8601 with a
``Z`` suffix, millisecond precision.

An alarm event (one message per raise and per clear; both carry the episode's ``id``)::

    {"schema_version": 1,
     "id": "<episode uuid, the same in the raise and the clear>",
     "event_id": "<uuid of this message; subscribers de-duplicate by it>",
     "type": "raise" | "clear",
     "time": "2026-11-28T12:00:00.500Z",
     "node": "box-1", "machine": "gearbox", "section": "00",
     "score": 0.71, "threshold": 0.52,
     "window": {"start_utc": "...Z", "end_utc": "...Z",
                "start_s": 50.5, "end_s": 60.5},      # seconds into a file source, else null
     "provider": "CPUExecutionProvider",
     "explanation": {...},                            # opaque here, filled by the scorer
     "clip": "/var/lib/asd-edge/clips/....wav" | null,
     "clip_url": "http://box-1:8090/clips/<id>.wav",         # only with the web page on
     "spectrogram_url": "http://box-1:8090/clips/<id>.png"}  # likewise
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer

from edge.alarms.rule import StreamKey, Transition

SCHEMA_VERSION: Literal[1] = 1
# episode id -> (clip URL, spectrogram URL): the web page's links (``WebServer.links``)
ClipLinks = Callable[[str], tuple[str, str]]
# keys an alarm event carries only when set (the web page's links); absent, not null, when not
OPTIONAL_EVENT_KEYS = frozenset({"clip_url", "spectrogram_url"})


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time without a time zone; give UTC times (datetime.now(UTC))")
    # Milliseconds, the precision on the wire, so a message survives a JSON round trip.
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def utc_iso(value: datetime) -> str:
    """``2026-11-28T12:00:00.500Z``: ISO 8601, UTC, milliseconds."""
    return _as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTime = Annotated[datetime, AfterValidator(_as_utc), PlainSerializer(utc_iso, return_type=str)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class EventWindow(_Message):
    """The audio window whose score decided the event.

    ``start_s``/``end_s``: seconds from the start of a file source; ``None`` for a microphone.
    """

    start_utc: UtcTime
    end_utc: UtcTime
    start_s: float | None
    end_s: float | None


class AlarmEvent(_Message):
    """One alarm event (schema version 1); see the module docstring for an example."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str
    event_id: str
    type: Literal["raise", "clear"]
    time: UtcTime
    node: str
    machine: str
    section: str
    score: float
    threshold: float
    window: EventWindow
    provider: str
    explanation: dict[str, Any]
    clip: str | None
    # the clip and its spectrogram by URL (``WebServer.clip_url``): with the web page on only
    clip_url: str | None = None
    spectrogram_url: str | None = None

    def to_json(self) -> bytes:
        unset = {key for key in OPTIONAL_EVENT_KEYS if getattr(self, key) is None}
        return self.model_dump_json(exclude=unset).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> AlarmEvent:
        return cls.model_validate_json(payload)

    @property
    def stream(self) -> StreamKey:
        return StreamKey(node=self.node, machine=self.machine, section=self.section)


def make_event(stream: StreamKey, transition: Transition, window: EventWindow, provider: str,
               explanation: dict[str, Any] | None = None, clip: str | None = None,
               links: ClipLinks | None = None) -> AlarmEvent:
    """The event message of an alarm rule's ``transition``, with a fresh ``event_id``;
    ``links``: the URLs of the episode's clip and spectrogram (a clip named, web page on)."""
    urls = links(transition.episode_id) if links is not None and clip is not None else None
    return AlarmEvent(id=transition.episode_id, event_id=str(uuid.uuid4()),
                      type=transition.type, time=transition.utc, node=stream.node,
                      machine=stream.machine, section=stream.section,
                      score=transition.score, threshold=transition.threshold, window=window,
                      provider=provider, explanation=explanation or {}, clip=clip,
                      clip_url=urls[0] if urls else None,
                      spectrogram_url=urls[1] if urls else None)


class StreamState(_Message):
    """The retained state of one stream: ``ok`` or ``alarm`` (with the open episode's id).

    Published retained on ``.../state`` at start, on every raise and clear, and again after
    every reconnect; Home Assistant's binary sensor reads ``state``.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    node: str
    machine: str
    section: str
    state: Literal["ok", "alarm"]
    id: str | None
    time: UtcTime
    score: float | None
    threshold: float

    @property
    def stream(self) -> StreamKey:
        return StreamKey(node=self.node, machine=self.machine, section=self.section)


class SignalState(_Message):
    """The retained signal state of one stream (``edge.signal``) on ``.../signal``: ``ok``,
    or ``no_signal`` with its ``reason``; ``since`` is when that state began, ``time`` when
    the message was made.

    Published retained at start and on every change, and again after every reconnect; Home
    Assistant's entities of the stream are available only while it says ``ok``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    node: str
    machine: str
    section: str
    state: Literal["ok", "no_signal"]
    reason: Literal["silence", "nan", "stuck", "frozen", "device_lost"] | None
    since: UtcTime
    time: UtcTime

    @property
    def stream(self) -> StreamKey:
        return StreamKey(node=self.node, machine=self.machine, section=self.section)


class ScoreMessage(_Message):
    """One hop's score (QoS 0, opt-in): ``stream_s`` is the window end in stream seconds."""

    schema_version: Literal[1] = SCHEMA_VERSION
    node: str
    machine: str
    section: str
    time: UtcTime
    stream_s: float
    score: float
    threshold: float

    @property
    def stream(self) -> StreamKey:
        return StreamKey(node=self.node, machine=self.machine, section=self.section)
