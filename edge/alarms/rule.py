"""The alarm rule of one stream: k of the last n hops over the threshold trips it, a score
that stays below a lower clear threshold for a hold time clears it.

A pure state machine: ``AlarmRule.update(stream_s, score, utc)`` takes one hop's score and
returns a ``Transition`` (a raise or a clear) or ``None``. It keeps no clock of its own:
``stream_s`` is the stream's time (seconds of audio since the stream started, the end of the
window just scored), so a file replayed at ``--speed max`` behaves exactly as it does in real
time; ``utc`` is the wall-clock time of the same instant, used only to name the episode.

Defaults, at the default 0.5 s hop:

- ``trip_hops=3`` of ``window_hops=5``: a sustained fault trips within 1.5 s of pushing the
  score over the threshold, while a spike of one or two hops (a door slam, a forklift passing)
  never does; "3 of 5" rather than "3 in a row" so one hop dipping under the threshold in the
  middle of a fault does not delay the alarm.
- clear level: hysteresis. A score hovering around the threshold would otherwise raise and
  clear on every other hop; it must fall below a lower clear threshold to count as normal.
  ``clear_threshold`` (absolute) wins, else ``clear_fraction`` x threshold; with neither set
  (both ``None``, "not set") the rule itself falls back to ``DEFAULT_CLEAR_FRACTION`` (0.9,
  10 % below the threshold). The daemon (``edge.daemon.alarm_rule_for``) fills in the bundle's
  calibrated clear threshold first when the stream's config sets neither, so the fallback
  only applies to a rule built without one (a threshold override, a test, a benchmark).
- ``hold_seconds=5.0``: ten hops below the clear threshold before the episode ends, so a fault
  that comes and goes (an intermittent bearing knock) stays one episode instead of many.

Thresholds may differ per hop: with ``domain_levels`` (threshold and clear threshold per
domain) each hop is compared with the levels of the domain ``update`` is given for it (the
domain of its nearest normal reference); a hop of no known domain uses the rule's own.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import BadInput

logger = logging.getLogger(__name__)

# Episode ids are uuid5 in this namespace of node/machine/section/start time: the same episode
# always has the same id, and ids of different streams or episodes never collide.
EPISODE_NAMESPACE = uuid.UUID("7d2f4b8e-5a61-4c1e-9f3a-2b6c8d0e1a47")

NAN_LOG_INTERVAL_S = 900.0  # a run of non-finite scores is logged again at most this often

# The clear threshold as a fraction of the threshold when neither clear_threshold nor
# clear_fraction is set (see the module docstring).
DEFAULT_CLEAR_FRACTION = 0.9


class AlarmRuleConfig(BaseModel):
    """How one stream turns hop scores into alarm episodes (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    trip_hops: int = Field(default=3, ge=1, title="k",
                           description="hops over the threshold, among the last window_hops, "
                                       "that raise an alarm")
    window_hops: int = Field(default=5, ge=1, title="n",
                             description="how many of the latest hops the trip rule looks at")
    clear_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="clear threshold as a fraction of the threshold (used when "
                    "clear_threshold is not set); not set (null): the bundle's calibrated "
                    "clear threshold in the daemon, 0.9 in a rule built without one")
    clear_threshold: float | None = Field(
        default=None, description="absolute clear threshold; overrides clear_fraction")
    hold_seconds: float = Field(default=5.0, ge=0.0,
                                description="seconds of stream time the score must stay below "
                                            "the clear threshold before the alarm clears")

    @model_validator(mode="after")
    def _k_within_n(self) -> AlarmRuleConfig:
        if self.trip_hops > self.window_hops:
            raise ValueError(f"trip_hops={self.trip_hops} is more than window_hops="
                             f"{self.window_hops}: the alarm could never trip; make trip_hops "
                             "at most window_hops")
        return self


@dataclass(frozen=True)
class StreamKey:
    """Which stream: the box (node), the machine type and the section (unit) it watches."""

    node: str
    machine: str
    section: str


@dataclass(frozen=True)
class Transition:
    """A raise or a clear of one episode.

    ``stream_s``/``utc``: when it happened (the end of the hop that decided it).
    ``episode_start_s``/``episode_start_utc``: the first hop over the threshold of the episode.
    ``score``: the hop's score; ``threshold``/``clear_threshold``: the levels that hop was
    compared with (its domain's where the rule has per-domain levels).
    """

    type: Literal["raise", "clear"]
    episode_id: str
    stream_s: float
    utc: datetime
    episode_start_s: float
    episode_start_utc: datetime
    score: float
    threshold: float
    clear_threshold: float


def episode_id(stream: StreamKey, start_utc: datetime) -> str:
    """The stable id of the episode of ``stream`` that started at ``start_utc`` (uuid5)."""
    name = f"{stream.node}/{stream.machine}/{stream.section}/{start_utc.isoformat()}"
    return str(uuid.uuid5(EPISODE_NAMESPACE, name))


class AlarmRule:
    """The alarm state of one stream; feed it every hop's score in order."""

    def __init__(self, stream: StreamKey, threshold: float,
                 config: AlarmRuleConfig | None = None,
                 domain_levels: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.stream = stream
        self.config = config or AlarmRuleConfig()
        self.threshold = float(threshold)
        if self.config.clear_threshold is not None:
            self.clear_threshold = float(self.config.clear_threshold)
        elif self.threshold > 0:
            fraction = self.config.clear_fraction
            self.clear_threshold = (DEFAULT_CLEAR_FRACTION if fraction is None
                                    else fraction) * self.threshold
        else:
            raise BadInput(f"the threshold of {stream.machine} section {stream.section} is "
                           f"{self.threshold}, so clear_fraction cannot give a lower clear "
                           "threshold: set clear_threshold in the stream's alarm config")
        if self.clear_threshold > self.threshold:
            raise BadInput(f"clear_threshold={self.clear_threshold} is above the threshold "
                           f"{self.threshold} of {stream.machine} section {stream.section}: "
                           "set it at or below the threshold")
        self.domain_levels = {domain: (float(t), float(c))
                              for domain, (t, c) in (domain_levels or {}).items()}
        for domain, (level, clear) in self.domain_levels.items():
            if clear > level:
                raise BadInput(f"clear_threshold={clear} is above the {domain} threshold "
                               f"{level} of {stream.machine} section {stream.section}: set it "
                               "at or below the threshold")
        # (stream_s, utc) of each of the last window_hops hops that was over the threshold,
        # or None for one that was not.
        self._recent: deque[tuple[float, datetime] | None] = deque(maxlen=self.config.window_hops)
        self._episode: tuple[str, float, datetime] | None = None  # id, start_s, start_utc
        self._below_since_s: float | None = None
        self._nan_scores = 0  # non-finite scores since the last line about them
        self._nan_logged = -NAN_LOG_INTERVAL_S

    def interrupt(self) -> None:
        """The stream's audio stopped being sound (``edge.signal``): forget the recent hops
        over the threshold and the hold time below the clear threshold. An open episode stays
        open (a dead microphone does not show the fault has gone); once the sound is back,
        ``trip_hops`` fresh hops raise and ``hold_seconds`` of fresh hops below the clear
        threshold clear, never hops from before the gap."""
        self._recent.clear()
        self._below_since_s = None

    def carry_on_from(self, previous: AlarmRule) -> None:
        """Take over ``previous``'s state (the recent hops over its threshold, an open episode
        and its hold time): new levels for a stream that keeps running (operator feedback
        reloaded the bundle), without closing or re-raising its episode."""
        self._recent = deque(previous._recent, maxlen=self.config.window_hops)
        self._episode = previous._episode
        self._below_since_s = previous._below_since_s

    @property
    def active(self) -> bool:
        """True while an episode is open (raised and not yet cleared)."""
        return self._episode is not None

    @property
    def episode_id(self) -> str | None:
        return self._episode[0] if self._episode else None

    def levels(self, domain: str | None = None) -> tuple[float, float]:
        """(threshold, clear threshold) a hop of ``domain`` is compared with: the domain's own
        levels when the rule has them, else the rule's."""
        if domain is not None and domain in self.domain_levels:
            return self.domain_levels[domain]
        return self.threshold, self.clear_threshold

    def update(self, stream_s: float, score: float, utc: datetime,
               domain: str | None = None) -> Transition | None:
        """Take one hop's score (of ``domain``, see ``levels``); return the raise or clear it
        causes, if any.

        A score that is not a finite number (NaN, inf) carries no information: it leaves the
        state as it is, and is logged once per ``NAN_LOG_INTERVAL_S`` with a count.
        """
        if not math.isfinite(score):
            self._nan_scores += 1
            now = time.monotonic()
            if now - self._nan_logged >= NAN_LOG_INTERVAL_S:
                logger.warning("%s/%s: %d score(s) that are not a number ignored by the alarm "
                               "rule (the latest %r at %.2f s); next report in %.0f min at the "
                               "earliest", self.stream.machine, self.stream.section,
                               self._nan_scores, score, stream_s, NAN_LOG_INTERVAL_S / 60)
                self._nan_logged, self._nan_scores = now, 0
            return None
        threshold, clear_threshold = self.levels(domain)
        if self._episode is None:
            return self._update_idle(stream_s, score, utc, threshold, clear_threshold)
        return self._update_active(stream_s, score, utc, threshold, clear_threshold)

    def _update_idle(self, stream_s: float, score: float, utc: datetime, threshold: float,
                     clear_threshold: float) -> Transition | None:
        self._recent.append((stream_s, utc) if score > threshold else None)
        over = [hop for hop in self._recent if hop is not None]
        if len(over) < self.config.trip_hops:
            return None
        start_s, start_utc = over[0]
        new_id = episode_id(self.stream, start_utc)
        self._episode = (new_id, start_s, start_utc)
        self._below_since_s = None
        logger.info("%s/%s: alarm raised at %.2f s (score %.4g > %.4g), episode %s",
                    self.stream.machine, self.stream.section, stream_s, score, threshold,
                    new_id)
        return self._transition("raise", stream_s, score, utc, threshold, clear_threshold)

    def _update_active(self, stream_s: float, score: float, utc: datetime, threshold: float,
                       clear_threshold: float) -> Transition | None:
        if score >= clear_threshold:
            self._below_since_s = None
            return None
        if self._below_since_s is None:
            self._below_since_s = stream_s
        if stream_s - self._below_since_s < self.config.hold_seconds:
            return None
        transition = self._transition("clear", stream_s, score, utc, threshold,
                                      clear_threshold)
        logger.info("%s/%s: alarm cleared at %.2f s, episode %s", self.stream.machine,
                    self.stream.section, stream_s, transition.episode_id)
        self._episode = None
        self._below_since_s = None
        self._recent.clear()  # a new episode needs k fresh hops over the threshold
        return transition

    def _transition(self, kind: Literal["raise", "clear"], stream_s: float, score: float,
                    utc: datetime, threshold: float, clear_threshold: float) -> Transition:
        assert self._episode is not None
        episode, start_s, start_utc = self._episode
        return Transition(type=kind, episode_id=episode, stream_s=stream_s, utc=utc,
                          episode_start_s=start_s, episode_start_utc=start_utc, score=score,
                          threshold=threshold, clear_threshold=clear_threshold)
