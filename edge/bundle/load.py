"""Loading a bundle on the edge: checks first, then the ONNX session and the scorers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import AlarmBudget, CalibrationTraces
from edge.bundle.fit import PROFILES_FILE, spectral_profiles
from edge.bundle.manifest import bundle_dir_for, read_manifest
from edge.bundle.system import DOMAINS, ScoringSystem, SectionThreshold, member_from_manifest
from edge.errors import BadInput
from edge.features import FrontEnd, Patching
from edge.inference.anp import OnnxAnp
from edge.inference.onnx_runtime import OnnxEmbedder

logger = logging.getLogger(__name__)


@dataclass
class Bundle:
    """A checked, loaded bundle: its manifest, folder and scoring system."""

    path: Path
    manifest: dict[str, Any]
    system: ScoringSystem

    @property
    def traces(self) -> CalibrationTraces | None:
        """Out-of-sample hop scores of the references (None: a bundle without them)."""
        if "alarm_calibration" not in self.manifest:
            return None
        return CalibrationTraces.load(self.path)

    @property
    def alarm_calibration(self) -> tuple[AlarmBudget, AlarmRuleConfig] | None:
        """The budget and alarm rule the bundle's thresholds were set for (None: clip
        quantiles, no promise)."""
        entry = self.manifest.get("alarm_calibration")
        if not entry:
            return None
        settings = {k: v for k, v in entry.items() if k not in ("file", "rule")}
        return AlarmBudget(**settings), AlarmRuleConfig(**entry["rule"])

    @property
    def machine(self) -> str:
        return str(self.manifest["machine"])

    @property
    def provider(self) -> str:
        sessions = [self.system.embedder, *self.system.patch_models.values()]
        providers = sorted({s.provider for s in sessions if s is not None})
        return ", ".join(providers) or "none (no network)"

    def reference(self, index: int) -> dict[str, Any]:
        return self.manifest["references"][index]


def load_bundle(models: str | Path, machine: str | None = None, device: str = "auto",
                threads: int | None = None) -> Bundle:
    """Check and load ``<models>/<machine>`` (or a bundle folder given directly).

    Refuses (``BadInput``, naming the file and the fix) a bundle whose format, version, machine
    type, files, hashes or model shapes do not match.
    """
    path = bundle_dir_for(models, machine or "")
    manifest = read_manifest(path, machine)
    where = path / "bundle.json"
    try:
        front_end = FrontEnd(**manifest["front_end"])
        patching = Patching(**manifest["patching"])
        members = [member_from_manifest(entry, path) for entry in manifest["system"]["members"]]
        thresholds = {int(s): section_threshold(v) for s, v in manifest["sections"].items()}
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"{where}: malformed ({type(err).__name__}: {err}); re-export the "
                       "bundle") from err
    embedder = None
    model = manifest.get("model")
    if any(m.kind == "embedding" for m in members):
        if not model:
            raise BadInput(f"{where}: an embedding member but no model entry; re-export")
        embedder = OnnxEmbedder(path / model["file"], front_end, patching, device=device,
                                threads=threads)
        for name, shape in model["outputs"].items():
            got = [o.shape for o in embedder.session.get_outputs() if o.name == name]
            if not got or got[0][1:] != shape[1:]:
                raise BadInput(f"{path / model['file']}: output {name} has shape "
                               f"{got[0] if got else None}, bundle.json says {shape}; "
                               "re-export the bundle")
    for member in members:
        if member.kind == "anp":
            assert member.model_path is not None
            member.patch_model = OnnxAnp(member.model_path, front_end, patching,
                                         int(member.model["partitions"]), device=device,
                                         threads=threads)
    system = ScoringSystem(front_end, patching, members, thresholds, embedder)
    system.profiles = load_profiles(path)
    return Bundle(path, manifest, system)


def section_threshold(entry: dict[str, Any]) -> SectionThreshold:
    """A section's entry of bundle.json: pooled thresholds plus, when the bundle has them,
    per-domain ones (bundles written before per-domain thresholds use the pooled ones)."""
    domains = {str(domain): SectionThreshold(float(v["threshold"]), float(v["clear_threshold"]),
                                             v.get("calibration",
                                                   {"normal_clips": v.get("normal_clips")}))
               for domain, v in entry.get("domains", {}).items()}
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise ValueError(f"unknown domain(s) {', '.join(sorted(unknown))} in the thresholds")
    return SectionThreshold(float(entry["threshold"]), float(entry["clear_threshold"]),
                            dict(entry.get("calibration", {})), domains)


def load_profiles(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-section spectral profiles of the references (for explanations)."""
    with np.load(path / PROFILES_FILE, allow_pickle=False) as data:
        spectra, sections = data["spectra"], data["sections"]
    return spectral_profiles(spectra, sections)
