"""Enrollment: add normal sound of one unit to a bundle's references, without retraining.

A site records a few minutes of its own machine running normally (the target domain) and
adds it to the section's references: the clips go through the bundle's own path (edge front
end, ONNX Runtime, each member's features), the scorers and thresholds are refitted from the
stored references plus the new clips (``edge.bundle.fit``), and the bundle is rewritten
atomically. For a machine type with no bundle at all, enrollment makes one of the
spectral-statistics detector alone, so monitoring starts before any model exists.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import AlarmBudget
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


def cut_clips(waveform: np.ndarray, sample_rate: int, seconds: float = CLIP_SECONDS
              ) -> list[np.ndarray]:
    """Cut (N,) audio into consecutive clips of ``seconds``; a tail under 3 s is dropped."""
    size = int(seconds * sample_rate)
    clips = [waveform[i:i + size] for i in range(0, waveform.shape[0], size)]
    return [c for c in clips if c.shape[0] >= MIN_CLIP_SECONDS * sample_rate]


def stats_only_system() -> tuple[ScoringSystem, dict[str, ScorerConfig], dict[str, list[float]]]:
    """A fresh system of the spectral-statistics detector alone (no network)."""
    member = placeholder_member("stats", "spectral", features=SPECTRAL_SYSTEMS["stats"])
    system = ScoringSystem(DEFAULT_FRONT_END, DEFAULT_PATCHING, [member])
    return system, {"stats": spectral_scorer_config()}, {"stats": [1.0]}


def enroll(models: str | Path, machine: str, section: int, clips: list[np.ndarray],
           source: str, domain: str = "target", device: str = "auto",
           threshold: ThresholdConfig | None = None,
           budget: AlarmBudget | None = None) -> tuple[Path, int]:
    """Add ``clips`` (16 kHz (N,) arrays) of ``machine``'s unit ``section`` to its bundle.

    Returns the bundle folder and how many clips were added. Creates a statistics-only bundle
    when ``<models>/<machine>`` does not exist.
    """
    if not clips:
        raise BadInput(f"no audio to enroll from {source}: give at least "
                       f"{MIN_CLIP_SECONDS:.0f} s of normal sound (better a few minutes)")
    folder = Path(models) / machine
    existing = (folder / MANIFEST).is_file()
    extra: dict[str, Any]
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
        system, configs, weights = stats_only_system()
        references = References()
        extra = {"system": {"chosen_by": "enrollment (no trained model for this machine type)"},
                 "provenance": {"created_by": "asd-edge enroll"}}
        calibration = threshold or ThresholdConfig()
    before = len(references.meta)
    for index, clip in enumerate(track(clips, f"enroll {machine} section_{section:02d}")):
        references.add(system, clip, {"file": f"{Path(source).name}#{index:04d}",
                                      "section": section, "domain": domain,
                                      "attributes": {}, "enrolled": True})
    if int(np.sum(references.sections == section)) < 2:
        raise BadInput(f"section {section:02d} would have only one normal clip: enroll at least "
                       f"{2 * CLIP_SECONDS:.0f} s so that a threshold can be calibrated")
    rule = AlarmRuleConfig(**references.calibration["rule"]) \
        if references.calibration.get("rule") else None
    fit_system(system, references, configs, weights, calibration, budget=budget, rule=rule)
    history = list(extra.get("provenance", {}).get("enrollments", []))
    history.append({"section": section, "clips": len(clips), "source": str(source),
                    "domain": domain})
    extra["provenance"] = {**extra.get("provenance", {}), "enrollments": history}
    with tempfile.TemporaryDirectory(prefix="asd-enroll-") as tmp:
        model_file = None
        if existing and (folder / "model.onnx").is_file():
            model_file = Path(tmp) / "model.onnx"
            model_file.write_bytes((folder / "model.onnx").read_bytes())
        write_bundle(folder, machine, system, references, configs, extra, model_file)
    logger.info("enrolled %d clip(s) into %s section %02d (%d references before)", len(clips),
                folder, section, before)
    return folder, len(clips)


def _threshold_config(bundle: Bundle) -> ThresholdConfig:
    """The calibration the bundle used (its first section's), so enrollment keeps it."""
    for entry in bundle.manifest.sections.values():
        calibration = entry.calibration
        calibration = calibration.get("decision", calibration)  # alarm levels: a budget
        if "method" in calibration:
            return ThresholdConfig(method=calibration["method"],
                                   quantile=calibration["quantile"])
    return ThresholdConfig()
