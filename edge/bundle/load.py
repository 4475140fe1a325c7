"""Loading a bundle on the edge: checks first, then the ONNX session and the scorers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import AlarmBudget, CalibrationTraces
from edge.bundle.fit import (
    PROFILES_FILE,
    quiet_levels,
    recover_interrupted_swap,
    spectral_profiles,
)
from edge.bundle.manifest import BundleManifest, bundle_dir_for, read_manifest
from edge.bundle.system import ScoringSystem
from edge.errors import BadInput

logger = logging.getLogger(__name__)


@dataclass
class Bundle:
    """A checked, loaded bundle: its manifest, folder and scoring system."""

    path: Path
    manifest: BundleManifest
    system: ScoringSystem

    @property
    def traces(self) -> CalibrationTraces | None:
        """Out-of-sample hop scores of the references (None: a bundle without them)."""
        if self.manifest.alarm_calibration is None:
            return None
        return CalibrationTraces.load(self.path)

    @property
    def alarm_calibration(self) -> tuple[AlarmBudget, AlarmRuleConfig] | None:
        """The budget and alarm rule the bundle's thresholds were set for (None: clip
        quantiles, no promise)."""
        entry = self.manifest.alarm_calibration
        if entry is None:
            return None
        return entry.budget(), entry.rule

    @property
    def machine(self) -> str:
        return self.manifest.machine

    @property
    def provider(self) -> str:
        sessions = [self.system.embedder, *self.system.patch_models.values()]
        providers = sorted({s.provider for s in sessions if s is not None})
        return ", ".join(providers) or "none (no network)"

    def reference(self, index: int) -> dict[str, Any]:
        return self.manifest.references[index].model_dump(mode="json", exclude_none=True)


def load_bundle(models: str | Path, machine: str | None = None, device: str = "auto",
                threads: int | None = None) -> Bundle:
    """Check and load ``<models>/<machine>`` (or a bundle folder given directly).

    Refuses (``BadInput``, naming the file, the field and the fix) a bundle whose format,
    version, machine type, fields, files, hashes or model shapes do not match.
    """
    path = bundle_dir_for(models, machine or "")
    recover_interrupted_swap(path)
    manifest = read_manifest(path, machine)
    front_end, patching = manifest.front_end, manifest.patching
    try:
        members = [spec.load(path, front_end, patching, device=device, threads=threads)
                   for spec in manifest.system.members]
    except (KeyError, TypeError, ValueError) as err:  # a scorer.json export did not write
        raise BadInput(f"{path}: a member's scorer is malformed ({type(err).__name__}: "
                       f"{err}); re-export the bundle") from err
    thresholds = {int(s): levels.levels() for s, levels in manifest.sections.items()}
    embedder = None
    if manifest.model is not None and any(m.embeds for m in members):
        embedder = manifest.model.embedder(path, front_end, patching, device=device,
                                           threads=threads)
    system = ScoringSystem(front_end, patching, members, thresholds, embedder)
    system.profiles, system.quiet_levels = load_profiles(path)
    return Bundle(path, manifest, system)


def load_profiles(path: Path) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]],
                                       dict[int, np.ndarray]]:
    """Per-section spectral profiles and quiet levels of the references (for explanations;
    a bundle written before quiet levels were kept has none)."""
    with np.load(path / PROFILES_FILE, allow_pickle=False) as data:
        spectra, sections = data["spectra"], data["sections"]
        quiet = data["quiet_db"] if "quiet_db" in data.files else \
            np.full(sections.shape, np.nan)
    return spectral_profiles(spectra, sections), quiet_levels(quiet, sections)
