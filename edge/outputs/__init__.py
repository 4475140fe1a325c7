"""Where alarm events, stream states and scores go: MQTT (with a durable outbox and Home
Assistant discovery) and the local journal, behind one small ``Output`` protocol."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from edge.alarms.rule import StreamKey
from edge.errors import AsdEdgeError
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState

logger = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 300.0  # a failing output is logged again at most this often


class Output(Protocol):
    """Something the daemon hands its messages to. Calls must not block on the network."""

    def publish_event(self, event: AlarmEvent) -> None:
        """An alarm raise or clear; must not be lost (MQTT stores it in its outbox first)."""

    def publish_state(self, state: StreamState) -> None:
        """The current state of a stream (latest wins)."""

    def publish_signal(self, signal: SignalState) -> None:
        """A change of a stream's signal state (``edge.signal``; latest wins)."""

    def publish_score(self, message: ScoreMessage) -> None:
        """One hop's score (best effort)."""

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        """An alarm's evidence clip has been written to ``clip`` (best effort)."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release resources."""


class FanOut:
    """Several outputs as one: a failing output is logged and does not stop the others."""

    def __init__(self, outputs: Sequence[Output]) -> None:
        self.outputs = list(outputs)
        self.failures: dict[str, int] = {}  # failures per output type, for status and metrics
        self._logged: dict[str, float] = {}

    def _each(self, method: str, *args: object) -> None:
        for output in self.outputs:
            try:
                getattr(output, method)(*args)
            except AsdEdgeError as err:  # a known failure (a full disk): one line, no trace
                self._failed(output, method, err)
            except Exception:
                logger.exception("output %s failed in %s", type(output).__name__, method)

    def _failed(self, output: object, method: str, err: AsdEdgeError) -> None:
        """Log a failing output once, then at most every ``ERROR_LOG_INTERVAL_S`` while it
        keeps failing (a full disk fails every event); ``failures`` counts them all."""
        name = type(output).__name__
        self.failures[name] = self.failures.get(name, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(name, -ERROR_LOG_INTERVAL_S) >= ERROR_LOG_INTERVAL_S:
            self._logged[name] = now
            logger.error("output %s failed in %s (%d failure(s) so far): %s", name, method,
                         self.failures[name], err)

    def publish_event(self, event: AlarmEvent) -> None:
        self._each("publish_event", event)

    def publish_state(self, state: StreamState) -> None:
        self._each("publish_state", state)

    def publish_signal(self, signal: SignalState) -> None:
        self._each("publish_signal", signal)

    def publish_score(self, message: ScoreMessage) -> None:
        self._each("publish_score", message)

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        self._each("publish_clip", stream, clip)

    def close(self, timeout_s: float = 5.0) -> None:
        self._each("close", timeout_s)


__all__ = ["AlarmEvent", "FanOut", "Output", "ScoreMessage", "SignalState", "StreamState"]
