"""Alarm thresholds that keep a false-alarm budget, from normal references streamed as the
daemon streams them.

    normal clips of a section (audio), in k folds
      -> each fold's clips of one domain joined into one recording, in their order
      -> the daemon's streaming windows (window_seconds, hop_seconds), the bundle's patch
         models (``ScoringSystem.run_patch_models``) and each member scored against scorers
         fitted WITHOUT that fold: out-of-sample hop scores, and each hop's domain (that of its
         nearest reference, as ``domain: auto`` decides)
      -> ``CalibrationTraces`` (kept in the bundle as ``calibration.npz``: raw member scores
         per hop, so a changed ensemble standardisation, alarm rule or budget needs no audio)
      -> per section and domain: combined hop scores -> the alarm rule's trip statistic ->
         block maxima -> ``edge.alarms.budget.budget_threshold``

Joined clips make the windows that straddle two clips: a change of operating state (and a
splice) inside a window, which a plant's healthy machine does all day; the threshold is set
with them in view. Enrollment adds the traces of its new clips (scored against everything
else) to the stored ones; the stored ones were scored against fewer references, which can
only make them higher: the promise stays on the safe side.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.alarms.budget import block_maxima, budget_threshold, trip_statistic
from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.system import DOMAINS, ScoringSystem, SectionThreshold
from edge.scoring.scorer import ScorerConfig, SectionScorer, section_folds
from edge.streaming import hop_patches_for, window_patches_for

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.npz"
MIN_BLOCKS = 6  # fewer blocks of a domain: it has no promise of its own (the pooled one holds)
CHUNK_SECONDS = 60.0  # audio pushed into the windower at a time
DEFAULT_FALSE_ALARMS_PER_DAY = 1 / 30  # what export and enroll calibrate for unless told
ENOUGH_MINUTES = 10.0  # enrolled audio below this: enrollment asks for more
# below this, enrollment says that more audio usually lowers the threshold: on 6 synthetic
# units an hour instead of half an hour lowered it on 5 (by 7-51 %; +17 % on the sixth) and
# caught 19 of 24 faults instead of 17, no false alarm either way (docs/ALARMS.md, session 12)
RECOMMENDED_MINUTES = 60.0
# a section whose enrolled audio covers this is calibrated on it alone (the hops of each
# stretch cover its audio less a partial last window: 10 min of audio cover 9.8)
ON_SITE_MINUTES = 0.9 * ENOUGH_MINUTES


class AlarmBudget(BaseModel):
    """The promise a bundle's alarm thresholds keep (``edge.alarms.budget``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    false_alarms_per_day: float = Field(
        DEFAULT_FALSE_ALARMS_PER_DAY, gt=0, le=1000,
        description="false alarms per day per stream on healthy sound, at most (default one a "
                    "month)")
    confidence: float = Field(0.9, gt=0.5, lt=1.0,
                              description="one-sided confidence of that bound")
    clear_quantile: float = Field(0.95, gt=0.5, lt=1.0,
                                  description="clear threshold: this quantile of normal hop "
                                              "scores (at most the threshold)")
    window_seconds: float = Field(10.0, gt=0, description="window the daemon scores")
    hop_seconds: float = Field(0.5, gt=0, description="seconds between scores")


@dataclass
class CalibrationTraces:
    """Out-of-sample hop scores of normal references (H hops in all).

    ``members``: name -> (H,) raw member score per hop; ``sections`` (H,); ``domains`` (H,) the
    hop's domain ("" when not known); ``streams`` (H,) the id of the joined recording a hop
    belongs to (hops of one recording are consecutive, in order); ``clips``: clips streamed;
    ``on_site`` (H,) bool: the hop is of enrolled audio (the unit's own sound, recorded where it
    runs) rather than of a data set's clips; ``recorded`` (H,): the domain its clips were
    recorded in (their label; "" in traces stored before it was kept).
    """

    members: dict[str, np.ndarray] = field(default_factory=dict)
    sections: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    domains: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U8"))
    streams: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    clips: int = 0
    on_site: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    recorded: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U8"))

    def __post_init__(self) -> None:
        self.on_site = np.asarray(self.on_site, bool)
        if self.on_site.shape[0] != self.sections.shape[0]:
            if self.on_site.size:
                raise ValueError("on_site must have one flag per hop")
            self.on_site = np.zeros(self.sections.shape[0], bool)  # stored before enrollment
        self.recorded = np.asarray(self.recorded, "<U8")
        if self.recorded.shape[0] != self.sections.shape[0]:
            if self.recorded.size:
                raise ValueError("recorded must have one domain per hop")
            self.recorded = np.full(self.sections.shape[0], "", "<U8")  # stored before it

    @property
    def hops(self) -> int:
        return int(self.sections.shape[0])

    def on_site_minutes(self, section: int, hop_seconds: float, window_seconds: float) -> float:
        """Minutes of enrolled audio of ``section`` its hops cover (each recording: its first
        window, then ``hop_seconds`` a hop)."""
        rows = self.on_site & (self.sections == section)
        hops = np.unique(self.streams[rows], return_counts=True)[1]
        return float(np.sum((hops - 1) * hop_seconds + window_seconds)) / 60.0

    def extend(self, other: CalibrationTraces) -> CalibrationTraces:
        if self.hops and set(self.members) != set(other.members):
            raise ValueError("calibration traces of different members cannot be joined")
        offset = int(self.streams.max()) + 1 if self.hops else 0
        names = other.members if not self.hops else self.members
        return CalibrationTraces(
            {n: np.concatenate([self.members.get(n, np.zeros(0)), other.members[n]])
             for n in names},
            np.concatenate([self.sections, other.sections]),
            np.concatenate([self.domains, other.domains]),
            np.concatenate([self.streams, other.streams + offset]), self.clips + other.clips,
            np.concatenate([self.on_site, other.on_site]),
            np.concatenate([self.recorded, other.recorded]))

    def select(self, rows: np.ndarray) -> CalibrationTraces:
        """The hops ``rows`` (H,) bool (``clips`` kept: it describes the whole calibration)."""
        return CalibrationTraces({n: v[rows] for n, v in self.members.items()},
                                 self.sections[rows], self.domains[rows], self.streams[rows],
                                 self.clips, self.on_site[rows], self.recorded[rows])

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        arrays: dict[str, Any] = {f"member_{n}": v for n, v in self.members.items()}
        arrays.update(sections=self.sections, domains=self.domains.astype("<U8"),
                      streams=self.streams, clips=np.array(self.clips),
                      on_site=self.on_site, recorded=self.recorded.astype("<U8"))
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, folder: Path) -> CalibrationTraces | None:
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            members = {k.removeprefix("member_"): data[k] for k in data.files
                       if k.startswith("member_")}
            return cls(members, data["sections"], data["domains"], data["streams"],
                       int(data["clips"]),
                       data["on_site"] if "on_site" in data.files else np.zeros(0, bool),
                       data["recorded"] if "recorded" in data.files else np.zeros(0, "<U8"))


AudioOf = Callable[[], np.ndarray]  # gives a clip's 16 kHz waveform (N,) when called


def stream_traces(system: ScoringSystem, parts: dict[str, list[np.ndarray]],
                  sections: np.ndarray, domains: Sequence[str],
                  scorer_configs: dict[str, ScorerConfig], part_weights: dict[str, list[float]],
                  audio: dict[int, AudioOf], budget: AlarmBudget, n_folds: int = 5,
                  seed: int = 0, conditions: Sequence[str] | None = None,
                  in_time_order: np.ndarray | None = None) -> CalibrationTraces:
    """Out-of-sample hop scores of the clips in ``audio`` (index -> its waveform).

    ``parts``: member -> [(N, D_i)] parts of all N references (the fitted bundle's);
    ``sections``/``domains``: (N,) of all references. The clips with audio are split into
    ``n_folds`` folds per section; each fold is scored by scorers fitted on every other
    reference (those without audio included), one joined recording per section and domain.
    ``conditions`` (N,): each clip's operating condition (its attributes); clips of one
    condition are joined together, so the recording changes state once per condition rather
    than at every clip (enrolled audio, in time order, is joined as recorded).
    ``in_time_order`` (N,): clips that are consecutive parts of recordings (an enrollment);
    their folds are contiguous stretches of time, so later audio is scored against earlier
    audio and the other way round, not against its own neighbours (``section_folds``). They
    are joined as a recording of their own (never spliced to data-set clips) and their hops are
    marked ``on_site``.
    """
    sections = np.asarray(sections)
    domains_arr = np.asarray(domains)
    with_audio = np.zeros(sections.shape[0], bool)
    with_audio[list(audio)] = True
    folds = section_folds(sections, n_folds, seed, with_audio, in_time_order, domains_arr)
    enrolled = np.zeros(sections.shape[0], bool) if in_time_order is None \
        else np.asarray(in_time_order, bool)
    keys = None if conditions is None else list(conditions)
    window_patches = window_patches_for(budget.window_seconds, system.front_end,
                                        system.patching)
    hop_patches = hop_patches_for(budget.hop_seconds, system.front_end, system.patching)
    traces = CalibrationTraces({m.name: np.zeros(0) for m in system.members})
    for fold in np.unique(folds[folds >= 0]):
        held = folds == fold
        if (~held).sum() == 0:
            continue
        fold_system = _fold_system(system, parts, sections, domains_arr, ~held,
                                   scorer_configs, part_weights)
        for section in np.unique(sections[held]):
            if section not in fold_system.sections:
                continue  # every clip of the section is in this fold: nothing to score against
            for domain, on_site in itertools.product(DOMAINS, (False, True)):
                rows = np.flatnonzero(held & (sections == section) & (domains_arr == domain)
                                      & (enrolled == on_site))
                if rows.size == 0:
                    continue
                if keys is not None and not on_site:  # a state lasts several clips
                    rows = np.array(sorted(rows, key=lambda i: (keys[int(i)], int(i))))
                waveform = np.concatenate([audio[int(i)]() for i in rows])
                traces = traces.extend(score_recording(fold_system, waveform, int(section),
                                                        window_patches, hop_patches,
                                                        len(rows), on_site, domain))
    return traces


def _fold_system(system: ScoringSystem, parts: dict[str, list[np.ndarray]],
                 sections: np.ndarray, domains: np.ndarray, train: np.ndarray,
                 scorer_configs: dict[str, ScorerConfig],
                 part_weights: dict[str, list[float]]) -> ScoringSystem:
    """``system`` with every member's scorer refitted on the ``train`` references only."""
    members = []
    for member in system.members:
        if member.scores_directly:
            members.append(member)
            continue
        scorer = SectionScorer(scorer_configs[member.name], part_weights[member.name]).fit(
            [np.asarray(p)[train] for p in parts[member.name]], sections[train],
            list(domains[train]))
        members.append(replace(member, scorer=scorer))
    return replace(system, members=members)


def score_recording(system: ScoringSystem, waveform: np.ndarray, section: int,
                     window_patches: int, hop_patches: int, clips: int,
                     on_site: bool = False, recorded: str = "") -> CalibrationTraces:
    """Stream one recording through the daemon's windower; every hop's member scores."""
    windower = system.stream(window_patches, hop_patches)
    chunk = int(CHUNK_SECONDS * system.front_end.sample_rate)
    scores: dict[str, list[float]] = {m.name: [] for m in system.members}
    hop_domains: list[str] = []
    for start in range(0, waveform.shape[0], chunk):
        new = windower.push(waveform[start:start + chunk])
        if new.shape[0] == 0:
            continue
        ran = system.run_patch_models(new) if system.runs_patch_models else None
        windows = windower.accept(*ran) if ran is not None else windower.accept(None, None)
        for window in windows:
            assessed = system.assess_window(window, section)
            for name, value in assessed.members.items():
                scores[name].append(value)
            hop_domains.append(assessed.domain or "")
    n = len(hop_domains)
    return CalibrationTraces({k: np.asarray(v, np.float64) for k, v in scores.items()},
                             np.full(n, section), np.asarray(hop_domains, "<U8"),
                             np.zeros(n, int), clips, np.full(n, on_site),
                             np.full(n, recorded, "<U8"))


def combined_scores(system: ScoringSystem, traces: CalibrationTraces,
                    section: int) -> np.ndarray:
    """(H_s,) the combined score of each hop of ``section`` (``ScoringSystem.combine``)."""
    rows = traces.sections == section
    return np.asarray(system.combine({n: v[rows] for n, v in traces.members.items()}, section),
                      np.float64)


def budget_thresholds(system: ScoringSystem, traces: CalibrationTraces,
                      rule: AlarmRuleConfig, budget: AlarmBudget,
                      on_site_minutes: float = ON_SITE_MINUTES,
                      ) -> dict[int, SectionThreshold]:
    """Per section: pooled thresholds and each domain's with enough audio, for ``budget``
    under ``rule``. Sections with too little calibration audio are left out (the caller keeps
    their clip-quantile thresholds and says there is no promise).

    A section with at least ``on_site_minutes`` of enrolled audio is calibrated on that audio
    alone: the unit's own sound where it runs is what the daemon will hear, while a data set's
    clips (other units, every operating condition, spliced together) have a far heavier tail
    than one unit has and would set its thresholds above its faults. The calibration says
    which (``calibration["on"]``).
    """
    out: dict[int, SectionThreshold] = {}
    for section in np.unique(traces.sections):
        rows = traces.sections == section
        combined = combined_scores(system, traces, int(section))
        streams, hop_domains = traces.streams[rows], traces.domains[rows]
        on_site = traces.on_site[rows]
        use_site = on_site.any() and \
            traces.on_site_minutes(int(section), budget.hop_seconds,
                               budget.window_seconds) >= on_site_minutes
        base = on_site if use_site else np.ones(combined.shape[0], dtype=bool)
        pooled = _calibrate(combined, streams, base, "pooled", rule, budget)
        if pooled is None:
            continue
        for domain in DOMAINS:
            of_domain = _calibrate(combined, streams, base & (hop_domains == domain), domain,
                                   rule, budget)
            if of_domain is not None:
                pooled.domains[domain] = of_domain
        for levels in (pooled, *pooled.domains.values()):
            levels.calibration["on"] = "enrolled audio" if use_site else "all references"
        out[int(section)] = pooled
    return out


def _calibrate(combined: np.ndarray, streams: np.ndarray, mask: np.ndarray, label: str,
               rule: AlarmRuleConfig, budget: AlarmBudget) -> SectionThreshold | None:
    """Thresholds from the hops ``mask`` of (H,) combined scores in recordings ``streams``
    (the other hops count as under every threshold); None with too few blocks."""
    block_hops = max(1, int(round(budget.window_seconds / budget.hop_seconds)))
    maxima = []
    for stream in np.unique(streams[mask]):
        in_stream = streams == stream
        values = np.where(mask[in_stream], combined[in_stream], -np.inf)
        statistic = trip_statistic(values, rule.trip_hops, rule.window_hops)
        maxima.append(block_maxima(statistic, block_hops))
    values = np.concatenate(maxima) if maxima else np.zeros(0)
    if values.size < MIN_BLOCKS:
        return None
    fitted = budget_threshold(values, budget.window_seconds, budget.false_alarms_per_day,
                              budget.confidence)
    clear = float(np.quantile(combined[mask], budget.clear_quantile))
    return SectionThreshold(fitted.threshold, min(clear, fitted.threshold), {
        "method": "false-alarm budget", "domain": label, "budget": fitted.as_dict(),
        "clear_quantile": budget.clear_quantile, "hops": int(mask.sum())})


@dataclass(frozen=True)
class StretchCheck:
    """One stretch of enrolled audio against the thresholds set without it.

    ``start_min``/``minutes``: where it lies in the enrolled audio of its section;
    ``peak_ratio``: its highest trip statistic over the threshold its hops would meet (under 1:
    no alarm); ``alarms``: separate raises it would have made; ``domain``: the one it was
    recorded in (traces stored before that was kept: its hops' nearest references'; "" when
    not known); times count within it. ``peak_min``: the middle of the window of the peak (on
    the same clock as ``start_min``), ``over_min``: how long the rule's statistic stayed over
    the threshold: when the sound the rest did not hold was heard, and for how long.
    """

    section: int
    start_min: float
    minutes: float
    peak_ratio: float
    alarms: int
    domain: str = ""
    peak_min: float = 0.0
    over_min: float = 0.0


def cross_check(system: ScoringSystem, traces: CalibrationTraces, streams: Sequence[int],
                rule: AlarmRuleConfig, budget: AlarmBudget) -> list[StretchCheck]:
    """Each recording of ``streams`` (ids in ``traces``; an enrollment's stretches of time, in
    order) run through the alarm rule against thresholds calibrated on every other recording:
    would the rest of the audio have promised the false-alarm rate this stretch kept?

    The stretches were already scored out of sample (``stream_traces``: contiguous folds);
    here the thresholds are refitted without each in turn, from the stored traces (no audio).
    A stretch that trips is sound the rest of the enrollment did not hold: an operating
    condition or a plant event heard once. ``[]`` when no stretch has a section with enough
    other audio.
    """
    hop = budget.hop_seconds
    checks: list[StretchCheck] = []
    offsets: dict[tuple[int, str], float] = {}
    for stream in streams:
        held = traces.streams == stream
        if not held.any():
            continue
        section = int(traces.sections[held][0])
        labels = traces.recorded[held] if traces.recorded[held].all() else traces.domains[held]
        names, counts = np.unique(labels, return_counts=True)
        domain = str(names[np.argmax(counts)])
        on_site = bool(traces.on_site[held].all())
        start = offsets.get((section, domain), 0.0)
        minutes = ((float(held.sum()) - 1) * hop + budget.window_seconds) / 60.0
        offsets[(section, domain)] = start + minutes
        if held.sum() < rule.trip_hops:
            continue  # a stretch too short to trip the rule (one clip) tells nothing
        rest = traces.select(~held)
        levels = budget_thresholds(system, rest, rule, budget,
                                   on_site_minutes=0.0 if on_site else ON_SITE_MINUTES,
                                   ).get(section)
        if levels is None:
            continue
        rows = np.flatnonzero(held)
        combined = combined_scores(system, traces.select(held), section)
        hop_domains = traces.domains[rows]
        threshold = np.array([levels.for_domain(str(d) or None).threshold for d in hop_domains])
        statistic = trip_statistic(combined - threshold, rule.trip_hops, rule.window_hops)
        over = statistic > 0
        alarms = int(np.sum(over[1:] & ~over[:-1]) + over[0]) if over.size else 0
        ratio = np.where(threshold > 0, combined / np.maximum(threshold, 1e-12), np.inf)
        ratios = trip_statistic(ratio, rule.trip_hops, rule.window_hops)
        at = int(np.argmax(ratios)) if ratios.size else 0
        peak = float(ratios[at]) if ratios.size else 0.0
        peak_min = start + (at * hop + budget.window_seconds / 2) / 60.0
        checks.append(StretchCheck(section, start, minutes, peak, alarms, domain, peak_min,
                                   float(over.sum()) * hop / 60.0))
    return sorted(checks, key=lambda c: (c.section, c.domain, c.start_min))


def describe(threshold: SectionThreshold) -> dict[str, Any] | None:
    """The promise of a calibrated threshold, for ``bundle verify`` (None: no promise)."""
    budget = threshold.calibration.get("budget")
    if not budget:
        return None
    return {"threshold": threshold.threshold,
            "false_alarms_per_day": budget["false_alarms_per_day"],
            "confidence": budget["confidence"], "expected_per_day": budget["expected_per_day"],
            "audio_minutes": budget["audio_minutes"], "bound": budget["bound"],
            "on": threshold.calibration.get("on", "all references")}


def promises(levels: SectionThreshold) -> dict[str, Any]:
    """Per level ("pooled", each domain): the false-alarm promise and what it rests on, or
    None when the level is a clip quantile that promises nothing."""
    out: dict[str, Any] = {}
    for label, own in [("pooled", levels), *sorted(levels.domains.items())]:
        out[label] = describe(own)
    return out


def describe_promises(levels: SectionThreshold) -> list[str]:
    """Lines for ``bundle verify``: the promised false-alarm rate per level."""
    lines = []
    for label, promise in promises(levels).items():
        if promise is None:
            if label == "pooled":
                lines.append("alarm promise: none (clip-quantile threshold; export or enroll "
                             "with --false-alarms-per-day for one)")
            continue
        lines.append(f"{label}: at most {promise['false_alarms_per_day']:.3g} false alarms per "
                     f"day per stream ({promise['confidence']:.0%} confidence; expected "
                     f"{promise['expected_per_day']:.2g}), resting on "
                     f"{promise['audio_minutes']:.1f} min of normal audio ({promise['on']}) "
                     f"streamed out of sample; threshold set by the {promise['bound']}")
    return lines
