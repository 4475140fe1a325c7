"""The local journal: every alarm event as one JSON line in a file.

What a site without a broker (and the demo) reads, and the record that survives an outbox
that had to drop messages. Each line is one ``AlarmEvent`` exactly as it goes over MQTT;
lines are flushed and fsynced as they are written (alarms are rare, so the cost is nil).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from edge.errors import BadInput, RuntimeFailure
from edge.outputs.events import AlarmEvent, ScoreMessage, StreamState

logger = logging.getLogger(__name__)


class Journal:
    """An ``Output`` that appends alarm events to ``path`` (JSON lines); states and scores
    are not journaled (the events hold every change of state)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        except OSError as err:
            raise BadInput(f"cannot open the journal {self.path}: {err}; point it at a "
                           "writable file") from err

    def publish_event(self, event: AlarmEvent) -> None:
        line = event.to_json() + b"\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as err:
                raise RuntimeFailure(f"cannot write to the journal {self.path}: {err}") from err
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

    def publish_score(self, message: ScoreMessage) -> None:
        """Not journaled: per-hop scores belong in the metrics, not in a file that grows."""

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def read_journal(path: Path) -> list[AlarmEvent]:
    """Every event in a journal file, in the order written; a torn last line is skipped."""
    events = []
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(AlarmEvent.from_json(line))
            except ValueError:
                logger.warning("%s line %d is not an alarm event (a write cut short?); "
                               "skipped", path, number)
    return events
