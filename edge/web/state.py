"""What the web page shows, kept as the daemon runs: an ``Output`` that records stream states
and alarm episodes, and a bounded ring buffer of hop scores per stream.

The daemon's thread calls ``publish_*`` and ``add_score``; the web server's thread reads
``overview``, ``timeline`` and ``episodes``. One lock, held only to copy plain data, so the
scoring thread never waits on a page.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.alarms.rule import StreamKey
from edge.bundle.calibrate import describe_promises
from edge.bundle.load import Bundle
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState, utc_iso
from edge.outputs.journal import read_journal, read_records

logger = logging.getLogger(__name__)

TIMELINE_HOPS = 20000  # a few hours of hops per stream (0.5 s hops: 2.8 h), ~0.5 MB each
EPISODES_KEPT = 1000


@dataclass
class StreamView:
    """One stream as the page knows it."""

    name: str
    machine: str
    section: str
    threshold: float
    clear_threshold: float
    state: str = "ok"
    episode: str | None = None
    scores: deque[tuple[float, float, float]] = field(
        default_factory=lambda: deque(maxlen=TIMELINE_HOPS))  # (utc seconds, score, threshold)
    marks: deque[tuple[float, str, str]] = field(
        default_factory=lambda: deque(maxlen=TIMELINE_HOPS // 10))  # (utc s, raise|clear, id)


@dataclass
class Episode:
    """An alarm episode: its raise event, and its clear once it came."""

    raised: AlarmEvent
    cleared: AlarmEvent | None = None
    stream: str = ""
    acknowledged: dict[str, Any] | None = None
    not_a_fault: dict[str, Any] | None = None  # the journal's feedback record, once enrolled
    feedback_error: str | None = None  # why the latest "not a fault" was refused

    @property
    def id(self) -> str:
        return self.raised.id

    def summary(self) -> dict[str, Any]:
        start = self.raised.time
        end = self.cleared.time if self.cleared else None
        return {"id": self.id, "stream": self.stream, "machine": self.raised.machine,
                "section": self.raised.section, "time": utc_iso(start),
                "duration_s": (end - start).total_seconds() if end else None,
                "open": self.cleared is None,
                "peak": max(self.raised.score, self.cleared.score if self.cleared else 0.0,
                            float(self.raised.explanation.get("peak_score", 0.0) or 0.0)),
                "threshold": self.raised.threshold, "clip": self.raised.clip is not None,
                "acknowledged": self.acknowledged, "not_a_fault": self.not_a_fault is not None}


class WebState:
    """The daemon's ``Output`` for the web page (see the module docstring)."""

    def __init__(self, streams: list[tuple[str, str, str, float, float]],
                 actions_path: Path, journal_path: Path | None = None) -> None:
        """``streams``: (name, machine, section, threshold, clear threshold) per stream;
        ``actions_path``: the JSON-lines journal of operator actions; ``journal_path``: the
        alarm journal whose earlier episodes the page lists from the start."""
        self._lock = threading.Lock()
        self.streams = {name: StreamView(name, machine, section, threshold, clear)
                        for name, machine, section, threshold, clear in streams}
        self._by_key = {(v.machine, v.section): v for v in self.streams.values()}
        self.episodes: dict[str, Episode] = {}
        self.actions_path = Path(actions_path)
        self.version = 0  # bumped on every change of state or episode (the page's SSE)
        if journal_path is not None and Path(journal_path).exists():
            for event in read_journal(journal_path):
                self._take_event(event)
            for record in read_records(journal_path, "feedback"):
                self._take_feedback(record)
        if self.actions_path.exists():
            for action in self._read_actions():
                episode = self.episodes.get(str(action.get("episode")))
                if episode is not None and action.get("action") == "acknowledge":
                    episode.acknowledged = action

    # -- the daemon's side (an Output, plus every hop's score) ---------------------------------

    def _view(self, machine: str, section: str) -> StreamView | None:
        return self._by_key.get((machine, section))

    def add_score(self, message: ScoreMessage) -> None:
        view = self._view(message.machine, message.section)
        if view is not None:
            with self._lock:
                view.scores.append((message.time.timestamp(), message.score,
                                    message.threshold))

    def _take_event(self, event: AlarmEvent) -> None:
        view = self._view(event.machine, event.section)
        name = view.name if view else f"{event.machine}/{event.section}"
        if event.type == "raise":
            self.episodes[event.id] = Episode(event, stream=name)
            while len(self.episodes) > EPISODES_KEPT:
                self.episodes.pop(next(iter(self.episodes)))
        elif event.id in self.episodes:
            self.episodes[event.id].cleared = event
        if view is not None:
            view.marks.append((event.time.timestamp(), event.type, event.id))

    def _take_feedback(self, record: dict[str, Any]) -> None:
        episode = self.episodes.get(str(record.get("episode")))
        if episode is not None:
            episode.not_a_fault, episode.feedback_error = record, None

    def add_feedback(self, record: dict[str, Any]) -> None:
        """An applied "not a fault" (the journal's record as JSON; ``Daemon.feedback_listener``)."""
        with self._lock:
            self._take_feedback(record)
            self.version += 1

    def feedback_refused(self, episode_id: str, who: str, error: str) -> None:
        """A refused "not a fault" from the page: shown on the episode, kept in the actions."""
        with self._lock:
            episode = self.episodes.get(episode_id)
            if episode is not None:
                episode.feedback_error = error
            self._write_action({"action": "not_a_fault", "episode": episode_id, "ok": False,
                                "time": utc_iso(datetime.now(UTC)), "by": who,
                                "error": error[:500]})
            self.version += 1

    def feedback_done(self, episode_id: str, who: str, record_id: str | None) -> None:
        """A "not a fault" from the page that went through: kept in the actions journal."""
        with self._lock:
            self._write_action({"action": "not_a_fault", "episode": episode_id, "ok": True,
                                "time": utc_iso(datetime.now(UTC)), "by": who,
                                "feedback_id": record_id})

    def publish_event(self, event: AlarmEvent) -> None:
        with self._lock:
            self._take_event(event)
            self.version += 1

    def publish_state(self, state: StreamState) -> None:
        view = self._view(state.machine, state.section)
        if view is not None:
            with self._lock:
                view.state, view.episode = state.state, state.id
                self.version += 1

    def publish_signal(self, signal: SignalState) -> None:
        """The page reads the signal state from the health snapshot; a change only makes the
        overview's live view send it at once."""
        with self._lock:
            self.version += 1

    def publish_score(self, message: ScoreMessage) -> None:
        """Scores come through ``add_score`` (every hop, not only the MQTT ones)."""

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        """The page renders clips itself (``/clips/ID.png``)."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Nothing to flush: actions are written as they happen."""

    # -- the page's side ------------------------------------------------------------------------

    def overview(self, health: dict[str, Any]) -> dict[str, Any]:
        """Every stream's state, latest score and levels, with ``health``'s numbers."""
        streams = []
        with self._lock:
            for view in self.streams.values():
                numbers = health.get("streams", {}).get(view.name, {})
                connected = numbers.get("connected", True)
                last = view.scores[-1] if view.scores else None
                signal = numbers.get("signal")
                state = signal_state(view.state, connected, signal)
                streams.append({
                    "name": view.name, "machine": view.machine, "section": view.section,
                    "state": state, "label": state_label(state, numbers.get("signal_reason")),
                    "episode": view.episode,
                    "score": last[1] if last else None,
                    "threshold": last[2] if last else view.threshold,
                    "clear_threshold": view.clear_threshold,
                    "time": utc_iso(datetime.fromtimestamp(last[0], UTC)) if last else None,
                    "signal": signal or "ok", "signal_reason": numbers.get("signal_reason"),
                    "hops": numbers.get("hops", 0), "connected": connected,
                    "capture": numbers.get("capture", {})})
            version = self.version
            episodes = len(self.episodes)
        return {"node": health.get("node", ""), "provider": health.get("provider", ""),
                "mqtt": health.get("mqtt", "off"), "outbox": health.get("outbox", 0),
                "streams": streams, "episodes": episodes, "version": version}

    def timeline(self, name: str, seconds: float) -> dict[str, Any] | None:
        """The last ``seconds`` of a stream's hop scores and raise/clear marks."""
        view = self.streams.get(name)
        if view is None:
            return None
        with self._lock:
            scores = list(view.scores)
            marks = list(view.marks)
        since = (scores[-1][0] if scores else 0.0) - seconds
        return {"name": name, "threshold": view.threshold,
                "clear_threshold": view.clear_threshold,
                "t": [s[0] for s in scores if s[0] >= since],
                "score": [s[1] for s in scores if s[0] >= since],
                "level": [s[2] for s in scores if s[0] >= since],
                "marks": [{"t": t, "type": kind, "id": eid} for t, kind, eid in marks
                          if t >= since]}

    def episode_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e.summary() for e in reversed(self.episodes.values())]

    def episode(self, episode_id: str) -> Episode | None:
        with self._lock:
            return self.episodes.get(episode_id)

    def acknowledge(self, episode_id: str, who: str, note: str = "") -> dict[str, Any] | None:
        """Mark an episode acknowledged and append the action to the actions journal."""
        with self._lock:
            episode = self.episodes.get(episode_id)
            if episode is None:
                return None
            action = {"action": "acknowledge", "episode": episode_id,
                      "time": utc_iso(datetime.now(UTC)), "by": who, "note": note[:500],
                      "machine": episode.raised.machine, "section": episode.raised.section}
            self._write_action(action)
            episode.acknowledged = action
            self.version += 1
        logger.info("episode %s acknowledged by %s", episode_id, who)
        return action

    def _write_action(self, action: dict[str, Any]) -> None:
        self.actions_path.parent.mkdir(parents=True, exist_ok=True)
        with self.actions_path.open("ab") as out:
            out.write(json.dumps(action).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())

    def _read_actions(self) -> list[dict[str, Any]]:
        actions = []
        for line in self.actions_path.read_text().splitlines():
            try:
                actions.append(json.loads(line))
            except ValueError:
                logger.warning("%s: a line that is not JSON skipped", self.actions_path)
        return actions


def enrollment_status(bundle: Bundle) -> list[dict[str, Any]]:
    """Per section of ``bundle``: its normal references per domain (and how many of them were
    enrolled on the box), its thresholds, and its false-alarm promise in the words of
    ``asd-edge bundle verify`` (``describe_promises``)."""
    rows = []
    for section in sorted({r.section for r in bundle.manifest.references}):
        references = [r for r in bundle.manifest.references if r.section == section]
        levels = bundle.system.thresholds.get(section)
        rows.append({
            "machine": bundle.machine, "section": f"{section:02d}",
            "references": {domain: sum((r.domain or "source") == domain for r in references)
                           for domain in ("source", "target")},
            "enrolled": sum(bool(r.enrolled) for r in references),
            "threshold": None if levels is None else float(levels.threshold),
            "promise": [] if levels is None else describe_promises(levels)})
    return rows


def signal_state(state: str, connected: bool, signal: str | None = None) -> str:
    """The state the page shows: ``device lost`` when the capture is not connected or the
    signal check says so, ``no signal`` when health's per-stream ``signal`` (``edge.signal``:
    silence, NaN or stuck samples) says so, else the alarm rule's ``ok`` or ``alarm``."""
    if signal == "device_lost" or not connected:
        return "device lost"
    if signal == "no_signal":
        return "no signal"
    return state


def state_label(state: str, reason: str | None) -> str:
    """The state as the page writes it: ``no signal (nan)`` names why."""
    if state == "no signal" and reason:
        return f"{state} ({reason})"
    return state
