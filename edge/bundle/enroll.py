"""Enrollment: add normal sound of one unit to a bundle's references, without retraining.

A site records a few minutes of its own machine running normally (the target domain) and
adds it to the section's references: the clips go through the bundle's own path (edge front
end, ONNX Runtime, each member's features), the scorers and thresholds are refitted from the
stored references plus the new clips (``edge.bundle.fit``), and the bundle is rewritten
atomically. For a machine type with no bundle at all, enrollment makes one of no-training
spectral detectors (``UNSEEN_SYSTEM``, the modulation detector), so monitoring starts before
any model exists.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import (
    ENOUGH_MINUTES,
    RECOMMENDED_MINUTES,
    AlarmBudget,
    StretchCheck,
    cross_check,
    describe,
)
from edge.bundle.fit import References, fit_system, placeholder_member, write_bundle
from edge.bundle.load import Bundle, load_bundle
from edge.bundle.manifest import MANIFEST
from edge.bundle.system import ScoringSystem
from edge.errors import BadInput
from edge.features import DEFAULT_FRONT_END, DEFAULT_PATCHING
from edge.progress import track
from edge.scoring.scorer import ScorerConfig
from edge.scoring.spectral import SPECTRAL_SYSTEMS, spectral_scorer_config
from edge.scoring.thresholds import ThresholdConfig

logger = logging.getLogger(__name__)

CLIP_SECONDS = 10.0  # enrolled audio is cut into clips of the DCASE length
MIN_CLIP_SECONDS = 3.0  # a shorter tail is dropped
# what a unit with no trained model is monitored by (docs/ALARMS.md)
UNSEEN_SYSTEM = "modulation"


def cut_clips(waveform: np.ndarray, sample_rate: int, seconds: float = CLIP_SECONDS
              ) -> list[np.ndarray]:
    """Cut (N,) audio into consecutive clips of ``seconds``; a tail under 3 s is dropped."""
    size = int(seconds * sample_rate)
    clips = [waveform[i:i + size] for i in range(0, waveform.shape[0], size)]
    return [c for c in clips if c.shape[0] >= MIN_CLIP_SECONDS * sample_rate]


class Enrolled(NamedTuple):
    """What ``enroll`` did: the bundle folder, clips added, the cross-check of the new audio
    (each stretch of time against thresholds set without it; ``[]`` without a budget or with
    too little audio), the section's promise (``calibrate.describe``; None: none) and the
    range (dB) of its normal clips' quiet levels (``edge.features.quiet_level_db``; None: not
    known)."""

    folder: Path
    added: int
    checks: list[StretchCheck]
    promise: dict[str, Any] | None
    quiet_db: tuple[float, float] | None = None


def domain_counts(domains: Sequence[str]) -> dict[str, int]:
    """Clips per domain, by name: {"source": 60, "target": 6}."""
    return {d: list(domains).count(d) for d in sorted(set(domains))}


def detector_names(system: str) -> list[str]:
    """``system`` ("modulation", "stats+modulation") -> its spectral detectors' names; refuses
    an unknown or repeated one."""
    names = system.split("+")
    unknown = [n for n in names if n not in SPECTRAL_SYSTEMS]
    if unknown or len(set(names)) != len(names):
        raise BadInput(f"--system {system}: unknown or repeated detector(s) "
                       f"{', '.join(unknown) or system}; give one of "
                       f"{', '.join(SPECTRAL_SYSTEMS)} or a '+' ensemble of different ones")
    return names


def no_training_system(system: str = UNSEEN_SYSTEM
                       ) -> tuple[ScoringSystem, dict[str, ScorerConfig], dict[str, list[float]]]:
    """A fresh system of no-training spectral detectors (no network): ``system`` names one of
    ``SPECTRAL_SYSTEMS`` or a '+' ensemble of them ("stats+modulation")."""
    names = detector_names(system)
    members = [placeholder_member(n, "spectral", features=SPECTRAL_SYSTEMS[n]) for n in names]
    return (ScoringSystem(DEFAULT_FRONT_END, DEFAULT_PATCHING, members),
            {n: spectral_scorer_config() for n in names}, {n: [1.0] for n in names})


def check_new_system(models: str | Path, machine: str, system_name: str | None) -> None:
    """Refuse ``system_name`` unless it names spectral detectors and ``<models>/<machine>`` is
    new (an existing bundle keeps its system); None always passes."""
    if system_name is None:
        return
    folder = Path(models) / machine
    if (folder / MANIFEST).is_file():
        raise BadInput(f"--system {system_name}: {folder} exists and keeps its system; enroll "
                       "into it without --system, or start a bundle in another --models")
    detector_names(system_name)


def enroll(models: str | Path, machine: str, section: int, clips: list[np.ndarray],
           source: str, domain: str | Sequence[str] = "target", device: str = "auto",
           threshold: ThresholdConfig | None = None,
           budget: AlarmBudget | None = None, clip_quantile: bool = False,
           system_name: str | None = None) -> Enrolled:
    """Add ``clips`` (16 kHz (N,) arrays, consecutive parts of the recording(s) in time order)
    of ``machine``'s unit ``section`` to its bundle. ``domain``: of every clip, or one per
    clip (a folder in the DCASE layout names each file's).

    The alarm thresholds are calibrated for ``budget`` (default: the bundle's, else one false
    alarm a month); ``clip_quantile``: keep the DCASE clip-quantile thresholds instead (no
    promise). Creates a bundle of no-training detectors when ``<models>/<machine>`` does not
    exist: ``system_name`` (``no_training_system``; default ``UNSEEN_SYSTEM``).
    """
    if not clips:
        raise BadInput(f"no audio to enroll from {source}: give at least "
                       f"{MIN_CLIP_SECONDS:.0f} s of normal sound (better a few minutes)")
    domains = [domain] * len(clips) if isinstance(domain, str) else list(domain)
    if len(domains) != len(clips):
        raise ValueError(f"{len(domains)} domains for {len(clips)} clips")
    folder = Path(models) / machine
    existing = (folder / MANIFEST).is_file()
    extra: dict[str, Any]
    check_new_system(models, machine, system_name)
    if existing:
        bundle = load_bundle(models, machine, device=device)
        system = bundle.system
        references = References.load(bundle.path, bundle.manifest)
        configs = {e.name: e.scorer_config for e in bundle.manifest.system.members}
        weights = {m.name: list(m.scorer.weights) for m in system.members}
        extra = bundle.manifest.model_dump(mode="json", exclude_none=True,
                                           include={"model", "labels", "provenance", "system"})
        calibration = threshold or _threshold_config(bundle)
        kept = bundle.alarm_calibration
        budget = budget or (kept[0] if kept else None)
    else:
        system, configs, weights = no_training_system(system_name or UNSEEN_SYSTEM)
        references = References()
        extra = {"system": {"chosen_by": "enrollment (no trained model for this machine type)"
                            if system_name is None else "enroll --system"},
                 "provenance": {"created_by": "asd-edge enroll"}}
        calibration = threshold or ThresholdConfig()
    if clip_quantile:
        budget = None
    elif budget is None:
        budget = AlarmBudget()
    before = len(references.meta)
    first_new_stream = int(references.traces.streams.max()) + 1 \
        if references.traces is not None and references.traces.hops else 0
    for index, clip in enumerate(track(clips, f"enroll {machine} section_{section:02d}")):
        references.add(system, clip, {"file": f"{Path(source).name}#{index:04d}",
                                      "section": section, "domain": domains[index],
                                      "attributes": {}, "enrolled": True})
    if int(np.sum(references.sections == section)) < 2:
        raise BadInput(f"section {section:02d} would have only one normal clip: enroll at least "
                       f"{2 * CLIP_SECONDS:.0f} s so that a threshold can be calibrated")
    rule = AlarmRuleConfig(**references.calibration["rule"]) \
        if references.calibration.get("rule") else AlarmRuleConfig()
    fit_system(system, references, configs, weights, calibration, budget=budget, rule=rule)
    checks: list[StretchCheck] = []
    traces = references.traces
    if budget is not None and traces is not None and traces.hops:
        new_streams = np.unique(traces.streams[(traces.streams >= first_new_stream)
                                               & (traces.sections == section)])
        checks = cross_check(system, traces, [int(s) for s in new_streams], rule, budget)
    history = list(extra.get("provenance", {}).get("enrollments", []))
    history.append({"section": section, "clips": len(clips), "source": str(source),
                    "domain": domains[0] if len(set(domains)) == 1 else
                    domain_counts(domains)})
    extra["provenance"] = {**extra.get("provenance", {}), "enrollments": history}
    with tempfile.TemporaryDirectory(prefix="asd-enroll-") as tmp:
        model_file = None
        if existing and (folder / "model.onnx").is_file():
            model_file = Path(tmp) / "model.onnx"
            model_file.write_bytes((folder / "model.onnx").read_bytes())
        write_bundle(folder, machine, system, references, configs, extra, model_file)
    logger.info("enrolled %d clip(s) into %s section %02d (%d references before)", len(clips),
                folder, section, before)
    return Enrolled(folder, len(clips), checks, describe(system.thresholds[section]),
                    system.quiet_range(section))


def enrollment_advice(enrolled: Enrolled, seconds: float) -> list[str]:
    """What the cross-check says, for people: (lines) whether the enrolled audio (``seconds``
    long) was stable, what it promises, and how much more to record when it is not enough."""
    minutes = seconds / 60.0
    lines = []
    named = len({c.domain for c in enrolled.checks}) > 1  # times count within each domain

    def label(check: StretchCheck, digits: int, width: int = 0) -> str:
        width = 0 if named else width
        span = (f"{check.start_min:{width}.{digits}f}-"
                f"{check.start_min + check.minutes:{width}.{digits}f} min")
        return f"{check.domain or 'unknown'} {span}" if named else span

    if enrolled.checks:
        lines.append("cross-check, each stretch of the new audio against thresholds set "
                     "without it:")
        for check in enrolled.checks:
            verdict = (f"would raise {check.alarms} alarm(s)" if check.alarms else "no alarm")
            lines.append(f"  {label(check, 1, 5)}: peak {check.peak_ratio:.2f} of the threshold, "
                         f"{verdict}")
    tripped = [c for c in enrolled.checks if c.alarms]
    if tripped:
        where = ", ".join(label(c, 0) for c in tripped)
        lines.append(f"NOT STABLE: {len(tripped)} of {len(enrolled.checks)} stretches ({where}) "
                     "hold sound the rest did not (an operating condition or a plant event "
                     f"heard once). Record at least {max(minutes, ENOUGH_MINUTES):.0f} more "
                     "minutes in which those conditions recur, and enroll them too.")
        for check in tripped:
            domain = f"{check.domain} " if named else ""
            lines.append(f"  heard around minute {check.peak_min:.1f} of the {domain}audio, over "
                         f"the threshold for {check.over_min * 60:.0f} s: what ran then (a speed, "
                         "a load, a machine nearby) needs more recording")
    elif enrolled.checks:
        lines.append("stable: no stretch would have raised an alarm against the rest")
    if minutes < ENOUGH_MINUTES:
        lines.append(f"ENOUGH? {minutes:.1f} min enrolled: record at least "
                     f"{ENOUGH_MINUTES - minutes:.0f} more minutes, covering every operating "
                     "condition the unit runs in (speeds, loads, the plant around it), so the "
                     "promise rests on the unit's own sound")
    elif minutes < RECOMMENDED_MINUTES and enrolled.promise is not None:
        lines.append(f"more: {minutes:.0f} min enrolled; up to {RECOMMENDED_MINUTES:.0f} min, "
                     "each further stretch in which the unit's conditions recur lowers the "
                     "threshold as a rule, so subtler faults raise (on 6 synthetic units an "
                     "hour instead of half an hour lowered it on 5 and caught 19 of 24 faults "
                     "instead of 17)")
    if enrolled.quiet_db is not None:
        low, high = enrolled.quiet_db
        lines.append(f"level: the quietest moments of the normal audio lie between {low:.1f} and "
                     f"{high:.1f} dB ({high - low:.1f} dB apart); an alarm whose window is "
                     "quieter or louder than that says so. If the plant's background changes "
                     "more (shifts, machines nearby), enroll its quiet and busy times too")
    promise = enrolled.promise
    if promise is None:
        lines.append("promise: none (clip-quantile thresholds: too little audio, or "
                     "--clip-quantile-thresholds)")
    else:
        lines.append(f"promise: at most {promise['false_alarms_per_day']:.3g} false alarms per "
                     f"day per stream ({promise['confidence']:.0%} confidence; expected "
                     f"{promise['expected_per_day']:.2g}), resting on "
                     f"{promise['audio_minutes']:.1f} min of normal audio ({promise['on']})")
    return lines


def _threshold_config(bundle: Bundle) -> ThresholdConfig:
    """The calibration the bundle used (its first section's), so enrollment keeps it."""
    for entry in bundle.manifest.sections.values():
        calibration = entry.calibration
        calibration = calibration.get("decision", calibration)  # alarm levels: a budget
        if "method" in calibration:
            return ThresholdConfig(method=calibration["method"],
                                   quantile=calibration["quantile"])
    return ThresholdConfig()
