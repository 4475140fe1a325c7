"""Where alarm events, stream states and scores go: MQTT (with a durable outbox and Home
Assistant discovery) and the local journal, behind one small ``Output`` protocol."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from edge.outputs.events import AlarmEvent, ScoreMessage, StreamState

logger = logging.getLogger(__name__)


class Output(Protocol):
    """Something the daemon hands its messages to. Calls must not block on the network."""

    def publish_event(self, event: AlarmEvent) -> None:
        """An alarm raise or clear; must not be lost (MQTT stores it in its outbox first)."""

    def publish_state(self, state: StreamState) -> None:
        """The current state of a stream (latest wins)."""

    def publish_score(self, message: ScoreMessage) -> None:
        """One hop's score (best effort)."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release resources."""


class FanOut:
    """Several outputs as one: a failing output is logged and does not stop the others."""

    def __init__(self, outputs: Sequence[Output]) -> None:
        self.outputs = list(outputs)

    def _each(self, method: str, *args: object) -> None:
        for output in self.outputs:
            try:
                getattr(output, method)(*args)
            except Exception:
                logger.exception("output %s failed in %s", type(output).__name__, method)

    def publish_event(self, event: AlarmEvent) -> None:
        self._each("publish_event", event)

    def publish_state(self, state: StreamState) -> None:
        self._each("publish_state", state)

    def publish_score(self, message: ScoreMessage) -> None:
        self._each("publish_score", message)

    def close(self, timeout_s: float = 5.0) -> None:
        self._each("close", timeout_s)


__all__ = ["AlarmEvent", "FanOut", "Output", "ScoreMessage", "StreamState"]
