"""Fitting a bundle's scorers and thresholds from normal references, and writing the bundle.

Export (with a trained network) and enrollment (on the edge box, no torch) both end here, so
a bundle is always fitted by the same code from the same per-clip features:

    normal clips -> ScoringSystem.clip_window (ONNX Runtime + the edge front end)
      -> each member's parts per clip -> per-section SectionScorer (knn / gmm)
      -> out-of-sample scores (k-fold per section) -> ensemble standardisation + thresholds

The per-clip parts are stored in the bundle (``<member>/references.npz``), so enrollment can
add clips of a unit and refit without the original data set; beside them a small picture of
each reference's spectrogram (``reference_spectrograms.npz``, ``spectrogram_thumbnail``), which
the web page shows next to an alarm's clip when the reference is its nearest.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import (
    CALIBRATION_FILE,
    MIN_BLOCKS,
    AlarmBudget,
    AudioOf,
    CalibrationTraces,
    budget_thresholds,
    stream_traces,
)
from edge.bundle.manifest import MANIFEST, BundleManifest, write_manifest
from edge.bundle.system import (
    DOMAINS,
    MEMBER_KINDS,
    DirectScorer,
    Member,
    ScoringSystem,
    SectionThreshold,
    member_to_manifest,
)
from edge.errors import BadInput
from edge.features import quiet_level_db, spectrogram_thumbnail
from edge.scoring.scorer import ScorerConfig, SectionScorer, cross_fit_scores
from edge.scoring.thresholds import ThresholdConfig, calibrate_threshold

logger = logging.getLogger(__name__)

REFERENCES_FILE = "references.npz"
PROFILES_FILE = "profiles.npz"
THUMBNAILS_FILE = "reference_spectrograms.npz"
MIN_DOMAIN_CLIPS = 3  # fewer normal references of a domain: it uses the pooled thresholds


def spectral_profiles(spectra: np.ndarray, sections: np.ndarray
                      ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per section: mean and std (F,) of the clips' mean log spectra (N, F)."""
    return {int(s): (spectra[sections == s].mean(0), spectra[sections == s].std(0))
            for s in np.unique(sections)}


def quiet_levels(quiet_db: np.ndarray, sections: np.ndarray) -> dict[int, np.ndarray]:
    """Per section: the (N_s,) quiet levels (dB) of its clips that have one (NaN: unknown)."""
    quiet_db = np.asarray(quiet_db, dtype=np.float64)
    return {int(s): quiet_db[(sections == s) & np.isfinite(quiet_db)]
            for s in np.unique(sections)}


@dataclass
class References:
    """The normal clips a bundle scores against: metadata and each member's parts per clip."""

    # per clip: file, section, domain, attributes
    meta: list[dict[str, Any]] = field(default_factory=list)
    # member name -> per clip -> that clip's parts [(D_i,)]
    parts: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    # per clip: mean over time of the model front end's log spectrum (F,)
    spectra: list[np.ndarray] = field(default_factory=list)
    # per clip: the level of its quietest frames, dB (``quiet_level_db``; NaN: a clip of a
    # bundle written before it was kept)
    quiet_db: list[float] = field(default_factory=list)
    # per clip: its spectrogram's thumbnail (R, C) uint8 (None: a clip of a bundle written
    # before thumbnails were kept)
    thumbnails: list[np.ndarray | None] = field(default_factory=list)
    # clip index -> its audio (not saved): the clips streamed for the false-alarm budget
    audio: dict[int, AudioOf] = field(default_factory=dict)
    # out-of-sample hop scores of the clips streamed so far (saved as calibration.npz)
    traces: CalibrationTraces | None = None
    # the budget and alarm rule the thresholds were set for (bundle.json "alarm_calibration")
    calibration: dict[str, Any] = field(default_factory=dict)

    def add(self, system: ScoringSystem, waveform: np.ndarray, meta: dict[str, Any],
            audio: AudioOf | None = None) -> None:
        """Score-ready features of one normal clip (16 kHz, (N,)) for every member.

        The clip is streamed for the false-alarm calibration (``fit_system`` with a budget):
        ``audio`` gives its waveform again when called (e.g. re-reads the file); by default
        the waveform is kept in memory until the bundle is written."""
        self.audio[len(self.meta)] = audio if audio is not None else (lambda: waveform)
        window = system.clip_window(waveform)
        for member in system.members:
            self.parts.setdefault(member.name, []).append(
                [p[0] for p in member.parts(window)])
        self.spectra.append(window.spectrogram.mean(axis=1))
        self.quiet_db.append(quiet_level_db(window.spectrogram))
        self.thumbnails.append(spectrogram_thumbnail(window.spectrogram, system.front_end))
        self.meta.append(meta)

    @property
    def sections(self) -> np.ndarray:
        return np.array([int(m["section"]) for m in self.meta])

    @property
    def domains(self) -> list[str]:
        return [str(m.get("domain") or "source") for m in self.meta]

    def stacked(self, member: str) -> list[np.ndarray]:
        """[(N, D_i)] parts of every clip for ``member``."""
        rows = self.parts[member]
        return [np.stack([clip[i] for clip in rows]) for i in range(len(rows[0]))]

    def save(self, folder: Path, member: str) -> None:
        arrays = {f"part{i}": x for i, x in enumerate(self.stacked(member))}
        arrays.update(sections=self.sections, domains=np.array(self.domains))
        np.savez(folder / REFERENCES_FILE, allow_pickle=False, **arrays)

    def profiles(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return spectral_profiles(np.stack(self.spectra), self.sections)

    def quiet_levels(self) -> dict[int, np.ndarray]:
        return quiet_levels(np.asarray(self.quiet_db), self.sections)

    def save_thumbnails(self, folder: Path) -> None:
        """``reference_spectrograms.npz``: ``images`` (N, R, C_max) uint8, zero-padded to the
        widest, ``columns`` (N,) each one's width, ``available`` (N,) False for a clip that
        has none; nothing when no clip has one."""
        if not any(t is not None for t in self.thumbnails):
            return
        shapes = [t.shape for t in self.thumbnails if t is not None]
        images = np.zeros((len(self.thumbnails), max(s[0] for s in shapes),
                           max(s[1] for s in shapes)), dtype=np.uint8)
        columns = np.zeros(len(self.thumbnails), dtype=np.int32)
        for row, thumbnail in enumerate(self.thumbnails):
            if thumbnail is not None:
                images[row, :thumbnail.shape[0], :thumbnail.shape[1]] = thumbnail
                columns[row] = thumbnail.shape[1]
        np.savez_compressed(folder / THUMBNAILS_FILE, images=images, columns=columns,
                            available=np.array([t is not None for t in self.thumbnails]))

    @classmethod
    def load(cls, bundle_dir: Path, manifest: BundleManifest) -> References:
        refs = cls(meta=[r.model_dump(mode="json", exclude_none=True)
                         for r in manifest.references])
        with np.load(bundle_dir / PROFILES_FILE, allow_pickle=False) as data:
            refs.spectra = list(data["spectra"])
            refs.quiet_db = list(data["quiet_db"]) if "quiet_db" in data.files \
                else [float("nan")] * len(refs.spectra)
        refs.thumbnails = load_thumbnails(bundle_dir, len(refs.meta))
        for entry in manifest.system.members:
            with np.load(bundle_dir / entry.scorer / REFERENCES_FILE,
                         allow_pickle=False) as data:
                n_parts = len([k for k in data.files if k.startswith("part")])
                stacked = [data[f"part{i}"] for i in range(n_parts)]
            refs.parts[entry.name] = [[x[row] for x in stacked]
                                      for row in range(len(refs.meta))]
        refs.traces = CalibrationTraces.load(bundle_dir)
        refs.calibration = {} if manifest.alarm_calibration is None else \
            manifest.alarm_calibration.model_dump(mode="json", exclude={"file"})
        return refs


def load_thumbnails(bundle_dir: Path, count: int) -> list[np.ndarray | None]:
    """The ``count`` references' spectrogram thumbnails of a bundle (None for each one that
    has none: all of them in a bundle written before they were kept)."""
    path = Path(bundle_dir) / THUMBNAILS_FILE
    if not path.exists():
        return [None] * count
    with np.load(path, allow_pickle=False) as data:
        images, columns, available = data["images"], data["columns"], data["available"]
    if images.shape[0] != count:
        logger.warning("%s holds %d thumbnails for %d references: not shown", path,
                       images.shape[0], count)
        return [None] * count
    return [images[row, :, :columns[row]] if available[row] else None
            for row in range(count)]


def fit_system(system: ScoringSystem, references: References,
               scorer_configs: dict[str, ScorerConfig], part_weights: dict[str, list[float]],
               threshold: ThresholdConfig, clear_quantile: float = 0.75,
               budget: AlarmBudget | None = None,
               rule: AlarmRuleConfig | None = None) -> dict[int, np.ndarray]:
    """Fit every member's scorer, the ensemble standardisation and per-section thresholds.

    Alarm thresholds: with a ``budget`` (what export and enrollment give), the clips with audio
    are streamed out of sample and each section's (and domain's) alarm threshold is set for
    ``budget.false_alarms_per_day`` under the alarm ``rule`` (``edge.bundle.calibrate``); the
    clip-quantile threshold below is then kept only as the DCASE decision threshold
    (``calibration["decision"]``). A section with too little audio for a promise
    keeps the clip-quantile threshold, and says so.

    Sets ``member.scorer`` and ``member.norm`` and ``system.thresholds`` in place; returns the
    out-of-sample combined normal scores per section. The clear threshold is the
    ``clear_quantile`` of the same calibration (0.75 by default): an alarm clears once the
    score is back among ordinary normal values. (The median was too strict: half of all
    normal windows lie above it, so a recovered machine rarely stayed below it for the hold
    time and episodes never closed.)

    Besides the pooled thresholds, each domain with at least ``MIN_DOMAIN_CLIPS`` normal
    references gets its own, calibrated on its clips' out-of-sample scores alone: the few
    target clips score differently out of sample from the many source clips (far higher when
    they have few close neighbours, so the pooled quantile sits near the target level and
    would miss faults of a source-domain unit).
    """
    sections = references.sections
    if sections.size == 0:
        raise BadInput("no normal reference clips: a bundle needs some for every section")
    domains = np.array(references.domains)
    oos: dict[str, np.ndarray] = {}
    for member in system.members:
        parts = references.stacked(member.name)
        config, weights = scorer_configs[member.name], part_weights[member.name]
        if member.scores_directly:
            # a clip's score does not depend on the references: out of sample as it stands
            member.scorer = DirectScorer().fit(parts, sections, references.domains)
            oos[member.name] = member.scorer.score(parts, sections)
            continue
        oos[member.name] = cross_fit_scores(config, weights, parts, sections,
                                            references.domains)
        member.scorer = SectionScorer(config, weights).fit(parts, sections, references.domains)
    system.profiles = references.profiles()
    system.quiet_levels = references.quiet_levels()
    combined_by_section: dict[int, np.ndarray] = {}
    for section in np.unique(sections):
        rows = sections == section
        for member in system.members:
            values = oos[member.name][rows]
            values = values[np.isfinite(values)]
            mean = float(values.mean()) if values.size else 0.0
            std = float(values.std()) if values.size > 1 else 1.0
            member.norm[int(section)] = (mean, max(std, 1e-9))
        combined = np.array([
            system.combine({m.name: float(oos[m.name][row]) for m in system.members},
                           int(section))
            for row in np.flatnonzero(rows)])
        finite = np.isfinite(combined)
        section_domains = domains[rows][finite]
        combined = combined[finite]
        if combined.size == 0:
            raise BadInput(f"section {int(section):02d} has a single normal reference clip: "
                           "thresholds need at least two; add more normal clips")
        pooled = _calibrate(combined, threshold, clear_quantile)
        for domain in DOMAINS:
            scores = combined[section_domains == domain]
            if scores.size >= MIN_DOMAIN_CLIPS:
                pooled.domains[domain] = _calibrate(scores, threshold, clear_quantile)
        system.thresholds[int(section)] = pooled
        combined_by_section[int(section)] = combined
    if budget is not None:
        apply_budget(system, references, scorer_configs, part_weights, budget,
                     rule or AlarmRuleConfig())
    return combined_by_section


def apply_budget(system: ScoringSystem, references: References,
                 scorer_configs: dict[str, ScorerConfig], part_weights: dict[str, list[float]],
                 budget: AlarmBudget, rule: AlarmRuleConfig) -> None:
    """Stream the references that have audio (out of sample), add their hop scores to the
    stored ones, and set each section's alarm thresholds for ``budget`` (see ``fit_system``)."""
    if references.audio:
        parts = {m.name: references.stacked(m.name) for m in system.members}
        conditions = [json.dumps(m.get("attributes") or {}, sort_keys=True)
                      for m in references.meta]
        new = stream_traces(system, parts, references.sections, references.domains,
                            scorer_configs, part_weights, references.audio, budget,
                            conditions=conditions,
                            in_time_order=np.array([bool(m.get("enrolled"))
                                                    for m in references.meta]))
        references.traces = new if references.traces is None else references.traces.extend(new)
    references.calibration = {**budget.model_dump(), "rule": rule.model_dump()}
    if references.traces is None or references.traces.hops == 0:
        logger.warning("no audio to stream for the false-alarm budget: the thresholds are "
                       "clip quantiles and promise nothing")
        return
    calibrated = budget_thresholds(system, references.traces, rule, budget)
    for section, decision in list(system.thresholds.items()):
        alarm = calibrated.get(section)
        if alarm is None:
            logger.warning("section %02d: too little audio for a false-alarm promise "
                           "(at least %d windows of %.0f s); its threshold is the clip "
                           "quantile: enroll a few more minutes", section, MIN_BLOCKS,
                           budget.window_seconds)
            decision.calibration["budget"] = None
            continue
        alarm.calibration["decision"] = {"threshold": decision.threshold,
                                         **decision.calibration}
        for domain, levels in alarm.domains.items():
            if domain in decision.domains:
                levels.calibration["decision"] = {"threshold": decision.domains[domain].threshold}
        system.thresholds[section] = alarm


def _calibrate(scores: np.ndarray, threshold: ThresholdConfig,
               clear_quantile: float) -> SectionThreshold:
    """Threshold and clear threshold from (N,) out-of-sample normal scores."""
    value = calibrate_threshold(scores, threshold)
    clear = calibrate_threshold(scores, ThresholdConfig(method=threshold.method,
                                                        quantile=clear_quantile))
    return SectionThreshold(
        value, min(clear, value),
        {"method": threshold.method, "quantile": threshold.quantile,
         "clear_quantile": clear_quantile, "normal_clips": int(scores.size),
         "out_of_sample": "5-fold per section (leave-one-out below 5 clips)"})


def thresholds_to_manifest(thresholds: dict[int, SectionThreshold]) -> dict[str, Any]:
    """bundle.json's ``sections``: per section the pooled thresholds and, under ``domains``,
    each calibrated domain's (a domain missing there uses the pooled ones)."""
    return {f"{s:02d}": {"threshold": t.threshold, "clear_threshold": t.clear_threshold,
                         "calibration": t.calibration,
                         "domains": {d: {"threshold": dt.threshold,
                                         "clear_threshold": dt.clear_threshold,
                                         "normal_clips": dt.calibration.get("normal_clips"),
                                         "calibration": dt.calibration}
                                     for d, dt in sorted(t.domains.items())}}
            for s, t in sorted(thresholds.items())}


SWAP_WAIT_S = 1.0  # how long a missing bundle folder beside a .old one may be a swap under way


def write_bundle(out_dir: Path, machine: str, system: ScoringSystem, references: References,
                 scorer_configs: dict[str, ScorerConfig], extra: dict[str, Any],
                 model_file: Path | None = None) -> Path:
    """Write ``out_dir`` (= ``<models>/<machine>``) atomically: a staging folder, then a swap.

    The swap is two renames (the old bundle to ``.<machine>.old``, the staging folder to
    ``<machine>``); a crash between them leaves no ``<machine>`` and the old bundle whole,
    which ``recover_interrupted_swap`` (run here and by ``load_bundle``) puts back. So a
    reader finds the old bundle or the new one, never a mix."""
    out_dir = Path(out_dir)
    recover_interrupted_swap(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if model_file is not None:
            shutil.copyfile(model_file, staging / "model.onnx")
        np.savez(staging / PROFILES_FILE, spectra=np.stack(references.spectra),
                 quiet_db=np.asarray(references.quiet_db, dtype=np.float64),
                 sections=references.sections)
        references.save_thumbnails(staging)
        if references.traces is not None and references.traces.hops:
            references.traces.save(staging)
            extra = {**extra, "alarm_calibration": {"file": CALIBRATION_FILE,
                                                    **references.calibration}}
        members = []
        for member in system.members:
            folder = staging / member.name
            member.scorer.save(folder)
            references.save(folder, member.name)
            if member.model_path is not None:  # a member's own model (the ANP's ONNX)
                shutil.copyfile(member.model_path, folder / member.model["file"])
            entry = member_to_manifest(member, member.name)
            entry["scorer_config"] = scorer_configs[member.name].model_dump()
            members.append(entry)
        manifest = {
            "machine": machine,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "asd_edge_version": __version__,
            "front_end": system.front_end.model_dump(),
            "patching": system.patching.model_dump(),
            **extra,
            "system": {**extra.get("system", {}), "members": members},
            "sections": thresholds_to_manifest(system.thresholds),
            "references": references.meta,
        }
        write_manifest(staging, json.loads(json.dumps(manifest)))
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out_dir.exists():
            out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
        for member in system.members:  # the copies in the bundle are the ones to keep
            if member.model_path is not None:
                member.model_path = out_dir / member.name / member.model["file"]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def recover_interrupted_swap(out_dir: Path, wait_s: float = SWAP_WAIT_S) -> bool:
    """Put back the old bundle a ``write_bundle`` cut short between its two renames left in
    ``.<machine>.old`` (there is then no ``<machine>``); True when it did. The old folder is
    only ever deleted while ``<machine>`` exists, so it is whole here. A swap under way in
    another process completes within microseconds: it is given ``wait_s`` first."""
    out_dir = Path(out_dir)
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists() or not (old / MANIFEST).is_file():
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if out_dir.exists():
            return False
    old.rename(out_dir)
    logger.warning("%s: a bundle write was cut short mid-swap; the previous bundle is back",
                   out_dir)
    return True


def placeholder_member(name: str, kind: str, **kwargs: Any) -> Member:
    """A member of ``kind`` not fitted yet (its scorer is set by ``fit_system``)."""
    return MEMBER_KINDS[kind](name=name, scorer=SectionScorer(ScorerConfig(), [1.0]), **kwargs)
