"""The scoring system a bundle ships: its members, their combination, thresholds.

A bundle's ``system`` is one member or an ensemble of members, each scoring a window of audio
against the section's normal references:

- ``embedding``: the exported network (ONNX Runtime) -> per-patch z_S, z_A -> ``pooling`` over
  the window's patches -> inference ``variant`` -> the member's ``SectionScorer`` (knn or gmm).
- ``spectral``: clip statistics of an extra front end (the spectral-statistics detector or the
  band-energy baseline) -> its ``SectionScorer``.

With several members, each member's score is standardised per section with the mean and
standard deviation of its out-of-sample normal scores (``norm``) and the results are summed
with the ensemble ``weights``. The same ``score_window`` serves the daemon's streamed windows
and offline scoring of whole clips (``score_clip``), so the two agree by construction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import BadInput
from edge.features import FrontEnd, Patching, patches, spectrogram
from edge.scoring.scorer import SectionScorer, pool, variant_parts
from edge.scoring.spectral import SpectralFeatures, clip_statistics
from edge.streaming import StreamingWindows, Window

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """One scoring system inside a bundle (see the module docstring)."""

    name: str
    kind: str  # "embedding" | "spectral"
    scorer: SectionScorer
    weight: float = 1.0
    pooling: str = "mean"
    variant: str = "concat"
    variant_weight: float = 0.5
    features: SpectralFeatures | None = None
    norm: dict[int, tuple[float, float]] = field(default_factory=dict)

    def parts(self, window: Window) -> list[np.ndarray]:
        """The member's feature parts [(1, D_i)] of one window."""
        if self.kind == "embedding":
            if window.section_embeddings is None or window.attribute_embeddings is None:
                raise ValueError("an embedding member needs a window with embeddings")
            section = pool(window.section_embeddings, self.pooling)[None]
            attribute = pool(window.attribute_embeddings, self.pooling)[None]
            return variant_parts(section, attribute, self.variant, self.variant_weight)[0]
        assert self.features is not None
        frames = window.extra_frames[self.name]
        return [clip_statistics(frames, self.features.statistics)[None]]

    def score(self, window: Window, section: int) -> float:
        return float(self.scorer.score(self.parts(window), np.array([section]))[0])

    def standardise(self, score: float, section: int) -> float:
        mean, std = self.norm.get(section, (0.0, 1.0))
        return (score - mean) / std


@dataclass
class SectionThreshold:
    """Decision threshold of one section, and the lower level at which an alarm may clear."""

    threshold: float
    clear_threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoringSystem:
    """Members, their combination and per-section thresholds; scores windows and clips."""

    front_end: FrontEnd
    patching: Patching
    members: list[Member]
    thresholds: dict[int, SectionThreshold] = field(default_factory=dict)
    embedder: Any = None  # an Embedder (OnnxEmbedder on the edge) when a member needs one
    # per section: mean and std (F,) over normal clips of each clip's mean log spectrum
    profiles: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def embeds(self) -> bool:
        return any(m.kind == "embedding" for m in self.members)

    @property
    def extra_front_ends(self) -> dict[str, FrontEnd]:
        return {m.name: m.features.front_end for m in self.members
                if m.kind == "spectral" and m.features is not None}

    @property
    def sections(self) -> list[int]:
        return sorted(set.intersection(*(set(m.scorer.sections) for m in self.members)))

    def check_section(self, section: int) -> None:
        if section not in self.sections:
            have = ", ".join(f"{s:02d}" for s in self.sections) or "none"
            raise BadInput(f"section {section:02d} has no normal references in this bundle "
                           f"(it has: {have}); pick one of those with --section, or enroll "
                           "normal sound of this unit with 'asd-edge enroll'")

    def member_scores(self, window: Window, section: int) -> dict[str, float]:
        return {m.name: m.score(window, section) for m in self.members}

    def combine(self, member_scores: dict[str, float], section: int) -> float:
        """One member: its raw score. Several: the weighted sum of standardised scores."""
        if len(self.members) == 1:
            return member_scores[self.members[0].name]
        return float(sum(m.weight * m.standardise(member_scores[m.name], section)
                         for m in self.members))

    def score_window(self, window: Window, section: int) -> tuple[float, dict[str, float]]:
        """(score, member scores) of a window of ``section``."""
        members = self.member_scores(window, section)
        return self.combine(members, section), members

    def clip_window(self, waveform: np.ndarray) -> Window:
        """A whole clip (N,) as one window: all its patches and frames."""
        spec = spectrogram(waveform, self.front_end)
        section = attribute = None
        if self.embeds:
            clip_patches = patches(spec, self.patching.patch_frames, self.patching.patch_hop)
            if clip_patches.shape[0] == 0:
                raise BadInput(f"audio of {waveform.shape[0] / self.front_end.sample_rate:.2f} s "
                               "is shorter than one patch; give at least "
                               f"{self.patch_seconds:.2f} s")
            section, attribute = self.embedder.embed(clip_patches)
        return Window(index=0, start_sample=0, end_sample=int(waveform.shape[0]),
                      section_embeddings=section, attribute_embeddings=attribute,
                      spectrogram=spec,
                      extra_frames={name: spectrogram(waveform, fe)
                                    for name, fe in self.extra_front_ends.items()})

    def score_clip(self, waveform: np.ndarray, section: int) -> tuple[float, dict[str, float]]:
        """Offline score of a whole 16 kHz clip (N,) of ``section``."""
        return self.score_window(self.clip_window(waveform), section)

    @property
    def patch_seconds(self) -> float:
        frames = self.patching.patch_frames
        return ((frames - 1) * self.front_end.hop_length + self.front_end.n_fft) \
            / self.front_end.sample_rate

    def stream(self, window_patches: int, hop_patches: int) -> StreamingWindows:
        """A fresh incremental windower for one stream of this system."""
        return StreamingWindows(self.front_end, self.patching, window_patches, hop_patches,
                                embeds=self.embeds, extra_front_ends=self.extra_front_ends)


def member_to_manifest(member: Member, folder: str) -> dict[str, Any]:
    """The JSON of a member in bundle.json; its scorer lives in ``folder`` of the bundle."""
    entry: dict[str, Any] = {"name": member.name, "kind": member.kind, "weight": member.weight,
                             "scorer": folder,
                             "norm": {f"{s:02d}": list(v) for s, v in member.norm.items()}}
    if member.kind == "embedding":
        entry.update(pooling=member.pooling, variant=member.variant,
                     variant_weight=member.variant_weight)
    else:
        assert member.features is not None
        entry["features"] = member.features.model_dump()
    return entry


def member_from_manifest(entry: dict[str, Any], bundle_dir: Path) -> Member:
    scorer = SectionScorer.load(bundle_dir / entry["scorer"])
    norm = {int(s): (float(v[0]), float(v[1])) for s, v in entry.get("norm", {}).items()}
    if entry["kind"] == "embedding":
        return Member(entry["name"], "embedding", scorer, float(entry["weight"]),
                      entry["pooling"], entry["variant"], float(entry["variant_weight"]),
                      norm=norm)
    if entry["kind"] == "spectral":
        return Member(entry["name"], "spectral", scorer, float(entry["weight"]),
                      features=SpectralFeatures(**entry["features"]), norm=norm)
    raise BadInput(f"{bundle_dir}/bundle.json: member kind {entry['kind']!r} unknown; "
                   "upgrade asd-edge or re-export the bundle")
