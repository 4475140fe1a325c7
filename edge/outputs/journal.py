"""The local journal: every alarm event as one JSON line in a file.

What a site without a broker (and the demo) reads, and the record that survives an outbox
that had to drop messages. Each line is one ``AlarmEvent`` exactly as it goes over MQTT;
lines are flushed and fsynced as they are written (alarms are rare, so the cost is nil).

Other records share the file, each a JSON object with a ``"record"`` key naming its type (an
alarm event has none): ``"feedback"`` is an operator's "not a fault" on an episode
(``edge.feedback.FeedbackRecord``, docs/EDGE.md "Operator feedback"); ``"signal"`` is a change
of a stream's signal state (``SignalState``, ``edge.signal``: when a microphone went dead, why,
and when its sound came back). ``read_journal`` gives the alarm events only and skips the other
records without a warning; ``read_records`` gives the records of one type, ``read_signals``
the signal changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

from edge.alarms.rule import StreamKey
from edge.errors import RuntimeFailure
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState

logger = logging.getLogger(__name__)


class Journal:
    """An ``Output`` that appends alarm events and signal changes to ``path`` (JSON lines);
    states and scores are not journaled (the events hold every change of state)."""

    def __init__(self, path: Path) -> None:
        """Opens ``path`` for appending. A journal that cannot be opened (a full or
        read-only state disk) does not stop the daemon: the error is logged, every event
        tries again, and each failure is a ``RuntimeFailure`` (the outputs' fan-out counts it
        and logs it at most every few minutes); the broker still gets the events."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._signals: dict[StreamKey, tuple[str, str | None]] | None = None  # last journaled
        try:
            self._open()
        except RuntimeFailure as err:
            logger.error("%s", err)

    def _open(self) -> BinaryIO:
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # unbuffered: a failed write leaves nothing behind for close() to flush
                self._file = self.path.open("ab", buffering=0)
            except OSError as err:
                raise RuntimeFailure(f"cannot open the journal {self.path}: {err}; free "
                                     "space on the state disk or point it at a writable "
                                     "folder") from err
        return self._file

    def _write(self, line: bytes) -> None:
        with self._lock:
            handle = self._open()
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as err:
                raise RuntimeFailure(f"cannot write to the journal {self.path}: {err}") from err

    def publish_event(self, event: AlarmEvent) -> None:
        self._write(event.to_json() + b"\n")
        logger.info("%s %s/%s/%s episode %s score %.4g (threshold %.4g)", event.type,
                    event.node, event.machine, event.section, event.id, event.score,
                    event.threshold)

    def recorded_events(self) -> list[AlarmEvent]:
        """The events of earlier runs in the journal (to find episodes a crash left open)."""
        with self._lock:
            return read_journal(self.path) if self.path.exists() else []

    def add_missing(self, events: list[AlarmEvent]) -> int:
        """Journal those of ``events`` the file does not hold yet (an event a crash left in
        the outbox only: the outbox is written first); returns how many."""
        known = {event.event_id for event in self.recorded_events()}
        missing = [event for event in events if event.event_id not in known]
        for event in missing:
            self.publish_event(event)
        return len(missing)

    def publish_state(self, state: StreamState) -> None:
        """Not journaled: the events already record every change of state."""

    def publish_signal(self, signal: SignalState) -> None:
        """A ``"record": "signal"`` line when the stream's signal state or reason differs from
        the last one journaled for it (the journal's last record of the stream, or ``ok`` when
        it holds none): the ``ok`` every start publishes is journaled only after a
        ``no_signal``, and a re-publish (after a reconnect) never."""
        if self._signals is None:
            self._signals = {s.stream: (s.state, s.reason) for s in self._recorded_signals()}
        now = (signal.state, signal.reason)
        if self._signals.get(signal.stream, ("ok", None)) == now:
            return
        self._write(b'{"record":"signal",' + signal.to_json()[1:] + b"\n")
        self._signals[signal.stream] = now

    def _recorded_signals(self) -> list[SignalState]:
        try:
            return read_signals(self.path)
        except OSError as err:
            raise RuntimeFailure(f"cannot read the journal {self.path}: {err}") from err

    def publish_score(self, message: ScoreMessage) -> None:
        """Not journaled: per-hop scores belong in the metrics, not in a file that grows."""

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        """Not journaled: the raise event names the clip."""

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                try:
                    self._file.close()
                except OSError as err:
                    raise RuntimeFailure(f"cannot close the journal {self.path}: {err}") from err


RECORD_KEY = b'"record":'  # what a line that is not an alarm event starts with


def append_record(path: Path, record: bytes) -> None:
    """Append one record (a JSON object with a ``"record"`` key, no newline) to the journal
    at ``path``, fsynced. Safe beside a running daemon's ``Journal``: both append (O_APPEND)
    whole lines in one write each."""
    if not record.lstrip().startswith(b"{" + RECORD_KEY):
        raise ValueError("a journal record must be a JSON object whose first key is 'record'")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            out.write(record + b"\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        raise RuntimeFailure(f"cannot write to the journal {path}: {err}") from err


def read_journal(path: Path) -> list[AlarmEvent]:
    """Every alarm event in a journal file, in the order written; records of other types
    (``"record": ...``, e.g. feedback) are skipped; a torn last line is skipped."""
    events = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith(b"{" + RECORD_KEY):
                continue
            try:
                events.append(AlarmEvent.from_json(line))
            except ValueError:
                logger.warning("%s line %d is not an alarm event (a write cut short?); "
                               "skipped", path, number)
    return events


def read_records(path: Path, record: str) -> list[dict[str, Any]]:
    """The journal's records of type ``record`` (e.g. "feedback"), as JSON objects, in the
    order written; a missing journal holds none."""
    path = Path(path)
    if not path.exists():
        return []
    found = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.lstrip().startswith(b"{" + RECORD_KEY):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                logger.warning("%s line %d is not JSON (a write cut short?); skipped", path,
                               number)
                continue
            if isinstance(value, dict) and value.get("record") == record:
                found.append(value)
    return found


def read_signals(path: Path) -> list[SignalState]:
    """The journal's signal changes (``"record": "signal"``), oldest first; malformed ones
    are skipped with a warning; a missing journal holds none."""
    changes = []
    for raw in read_records(path, "signal"):
        raw.pop("record")
        try:
            changes.append(SignalState.model_validate(raw))
        except ValueError:
            logger.warning("%s: a signal record that does not parse was skipped", path)
    return changes
