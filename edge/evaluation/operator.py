"""A simulated operator for stream replays: "not a fault" to every false alarm.

On a site, the operator who walks to a machine after an alarm and finds it healthy answers
"not a fault" (docs/EDGE.md, ``edge.feedback``): the episode's evidence clip joins the
section's references and the thresholds are recalibrated for the same budget. Whether that
teaches the monitor the plant (the next background step of the same kind stays quiet) or
blinds it (the faults that follow score under the new thresholds) is measured by replaying
labelled recordings with ``Operator`` among the daemon's outputs
(``asd-edge evaluate --streams ... --operator``).

``Operator`` answers each false alarm (a raise outside every labelled fault's scoring span,
``edge.evaluation.streams``) once its episode has cleared and its clip is written, on the
daemon's main thread (``Daemon.answer_now``), so the new bundle takes effect from the next
batch of blocks: a known point of the stream, whatever the machine's speed. A true alarm is
never answered: the operator who walks to that machine finds the fault.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.alarms.rule import StreamKey
from edge.feedback import FeedbackAck, NotAFaultCommand
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState

if TYPE_CHECKING:
    from edge.daemon import Daemon


class Operator:
    """An ``edge.outputs.Output`` that answers "not a fault" to false alarms.

    ``names``: (machine, section "NN") -> stream name; ``is_false_alarm``: stream name ->
    whether a raise at that many seconds into its recording is a false alarm. Set ``daemon``
    before the daemon runs. ``answers`` holds, per stream name, one dict per answer:
    ``episode``, ``raised_s``, ``ok``, ``threshold_before``, ``threshold``, ``references``,
    ``error``.
    """

    def __init__(self, names: dict[tuple[str, str], str],
                 is_false_alarm: dict[str, Callable[[float], bool]]) -> None:
        self._names = names
        self._false = is_false_alarm
        self.daemon: Daemon | None = None
        self._raised: dict[str, tuple[str, float, str]] = {}  # episode -> stream, s, clip name
        self._cleared: list[str] = []  # episodes cleared, not yet answered
        self._written: set[str] = set()  # clip file names written
        self.answers: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}

    def publish_event(self, event: AlarmEvent) -> None:
        name = self._names.get((event.machine, event.section))
        if name is None:
            return
        if event.type == "raise" and event.clip is not None:
            assert event.window.end_s is not None
            self._raised[event.id] = (name, float(event.window.end_s), Path(event.clip).name)
        elif event.type == "clear" and event.id in self._raised:
            self._cleared.append(event.id)
        self._answer_due()

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        self._written.add(Path(clip).name)
        self._answer_due()

    def _answer_due(self) -> None:
        assert self.daemon is not None, "set Operator.daemon before the daemon runs"
        for episode in list(self._cleared):
            name, raised_s, clip = self._raised[episode]
            if clip not in self._written:
                continue  # the post-roll is still being recorded
            self._cleared.remove(episode)
            if self._false[name](raised_s):
                self.daemon.answer_now(NotAFaultCommand(episode=episode), "cli",
                                       self._acknowledged(name, episode, raised_s))

    def _acknowledged(self, name: str, episode: str, raised_s: float
                      ) -> Callable[[FeedbackAck], None]:
        def keep(ack: FeedbackAck) -> None:
            self.answers[name].append({
                "episode": episode, "raised_s": round(raised_s, 2), "ok": ack.ok,
                "threshold_before": ack.threshold_before, "threshold": ack.threshold,
                "references": ack.references, "error": ack.error})
        return keep

    def publish_state(self, state: StreamState) -> None:
        pass

    def publish_signal(self, signal: SignalState) -> None:
        pass

    def publish_score(self, message: ScoreMessage) -> None:
        pass

    def close(self, timeout_s: float = 5.0) -> None:
        pass
