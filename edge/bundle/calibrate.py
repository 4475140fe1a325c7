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


class AlarmBudget(BaseModel):
    """The promise a bundle's alarm thresholds keep (``edge.alarms.budget``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    false_alarms_per_day: float = Field(
        1 / 30, gt=0, le=1000,
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
    belongs to (hops of one recording are consecutive, in order); ``clips``: clips streamed.
    """

    members: dict[str, np.ndarray] = field(default_factory=dict)
    sections: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    domains: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U8"))
    streams: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    clips: int = 0

    @property
    def hops(self) -> int:
        return int(self.sections.shape[0])

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
            np.concatenate([self.streams, other.streams + offset]), self.clips + other.clips)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        arrays: dict[str, Any] = {f"member_{n}": v for n, v in self.members.items()}
        arrays.update(sections=self.sections, domains=self.domains.astype("<U8"),
                      streams=self.streams, clips=np.array(self.clips))
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
                       int(data["clips"]))


AudioOf = Callable[[], np.ndarray]  # gives a clip's 16 kHz waveform (N,) when called


def stream_traces(system: ScoringSystem, parts: dict[str, list[np.ndarray]],
                  sections: np.ndarray, domains: Sequence[str],
                  scorer_configs: dict[str, ScorerConfig], part_weights: dict[str, list[float]],
                  audio: dict[int, AudioOf], budget: AlarmBudget, n_folds: int = 5,
                  seed: int = 0, conditions: Sequence[str] | None = None) -> CalibrationTraces:
    """Out-of-sample hop scores of the clips in ``audio`` (index -> its waveform).

    ``parts``: member -> [(N, D_i)] parts of all N references (the fitted bundle's);
    ``sections``/``domains``: (N,) of all references. The clips with audio are split into
    ``n_folds`` folds per section; each fold is scored by scorers fitted on every other
    reference (those without audio included), one joined recording per section and domain.
    ``conditions`` (N,): each clip's operating condition (its attributes); clips of one
    condition are joined together, so the recording changes state once per condition rather
    than at every clip (enrolled audio, in time order, is joined as recorded).
    """
    sections = np.asarray(sections)
    domains_arr = np.asarray(domains)
    with_audio = np.zeros(sections.shape[0], bool)
    with_audio[list(audio)] = True
    folds = section_folds(sections, n_folds, seed, with_audio)
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
            for domain in DOMAINS:
                rows = np.flatnonzero(held & (sections == section) & (domains_arr == domain))
                if rows.size == 0:
                    continue
                if keys is not None:  # a state lasts several clips, as on a plant
                    rows = np.array(sorted(rows, key=lambda i: (keys[int(i)], int(i))))
                waveform = np.concatenate([audio[int(i)]() for i in rows])
                traces = traces.extend(_score_recording(fold_system, waveform, int(section),
                                                        window_patches, hop_patches,
                                                        len(rows)))
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


def _score_recording(system: ScoringSystem, waveform: np.ndarray, section: int,
                     window_patches: int, hop_patches: int, clips: int) -> CalibrationTraces:
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
                             np.zeros(n, int), clips)


def combined_scores(system: ScoringSystem, traces: CalibrationTraces,
                    section: int) -> np.ndarray:
    """(H_s,) the combined score of each hop of ``section`` (``ScoringSystem.combine``)."""
    rows = traces.sections == section
    return np.asarray(system.combine({n: v[rows] for n, v in traces.members.items()}, section),
                      np.float64)


def budget_thresholds(system: ScoringSystem, traces: CalibrationTraces,
                      rule: AlarmRuleConfig, budget: AlarmBudget,
                      ) -> dict[int, SectionThreshold]:
    """Per section: pooled thresholds and each domain's with enough audio, for ``budget``
    under ``rule``. Sections with too little calibration audio are left out (the caller keeps
    their clip-quantile thresholds and says there is no promise)."""
    out: dict[int, SectionThreshold] = {}
    for section in np.unique(traces.sections):
        rows = traces.sections == section
        combined = combined_scores(system, traces, int(section))
        streams, hop_domains = traces.streams[rows], traces.domains[rows]
        pooled = _calibrate(combined, streams, np.ones(combined.shape[0], dtype=bool),
                            "pooled", rule, budget)
        if pooled is None:
            continue
        for domain in DOMAINS:
            of_domain = _calibrate(combined, streams, hop_domains == domain, domain, rule,
                                   budget)
            if of_domain is not None:
                pooled.domains[domain] = of_domain
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


def describe(threshold: SectionThreshold) -> dict[str, Any] | None:
    """The promise of a calibrated threshold, for ``bundle verify`` (None: no promise)."""
    budget = threshold.calibration.get("budget")
    if not budget:
        return None
    return {"threshold": threshold.threshold,
            "false_alarms_per_day": budget["false_alarms_per_day"],
            "confidence": budget["confidence"], "expected_per_day": budget["expected_per_day"],
            "audio_minutes": budget["audio_minutes"], "bound": budget["bound"]}
