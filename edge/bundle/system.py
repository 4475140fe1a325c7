"""The scoring system a bundle ships: its members, their combination, thresholds.

A bundle's ``system`` is one member or an ensemble of members, each scoring a window of audio
against the section's normal references:

- ``embedding``: the exported network (ONNX Runtime) -> per-patch z_S, z_A -> ``pooling`` over
  the window's patches -> inference ``variant`` -> the member's ``SectionScorer`` (knn or gmm).
- ``spectral``: clip statistics of an extra front end (the spectral-statistics detector or the
  band-energy baseline) -> its ``SectionScorer``.
- ``anp``: the attentive neural process (ANP-Boot): its own ONNX model (``patch_model``) gives
  each patch its target NLL under the partitions fixed at export (P, R); the window's score is
  the mean over patches and partitions. That already is an anomaly score, so the member scores
  directly (``DirectScorer``: no references searched); in an ensemble it is standardised like
  every member, with its normal references' scores (they do not depend on the other
  references, so they are out of sample for the scorer as they stand; the ANP network itself
  saw those clips in training, as the embedding network did).

Per-patch models (the embedder, each ``anp`` member's ``patch_model``) run once per new patch;
a window carries their per-patch outputs (``Window.section_embeddings`` etc. and
``Window.patch_outputs`` by member name). With several members, each member's score is
standardised per section with the mean and standard deviation of its out-of-sample normal
scores (``norm``) and the results are summed with the ensemble ``weights``. The same
``score_window`` serves the daemon's streamed windows and offline scoring of whole clips
(``score_clip``), so the two agree by construction.

Thresholds are per section, and within a section per domain where the references allow: the
few target-domain references score differently out of sample from the many source ones (higher
when they have few close neighbours), so one threshold over both can sit near the target level
and miss a source-domain unit's faults, or the other way round.
``assess_window`` also says which domain a window looks like: the domain of its nearest
reference in the first nearest-neighbour member (``domain_member``); the alarm rule compares
the score with that domain's threshold (``SectionThreshold.for_domain``).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import numpy as np

from edge.errors import BadInput
from edge.features import FrontEnd, Patching, patches, spectrogram
from edge.scoring.scorer import (
    SCORER_FILE,
    ScorerConfig,
    SectionModel,
    SectionScorer,
    pool,
    variant_parts,
)
from edge.scoring.spectral import SpectralFeatures
from edge.streaming import StreamingWindows, Window

logger = logging.getLogger(__name__)

DIRECT_SCORER_VERSION = 1
Score = TypeVar("Score", float, np.ndarray)  # one window's score, or (H,) of many hops


class PatchScorer(Protocol):
    """A per-patch model of a member (``edge.inference.OnnxAnp`` on the edge)."""

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        """(P, F, T) float32 patches -> (P, K) per-patch outputs."""
        ...


class DirectScorer(SectionScorer):
    """The scorer of a member whose feature already is an anomaly score (kind ``anp``).

    Its one part (Q, 1) is the score; fitting only records which sections have normal
    references. Saved as a ``scorer.json`` of type ``direct``.
    """

    def __init__(self) -> None:
        super().__init__(ScorerConfig(), [1.0])

    def fit(self, parts: Sequence[np.ndarray], sections: np.ndarray,
            domains: Sequence[str]) -> DirectScorer:
        # no references are kept: an empty model per section says the section is known
        self.sections = {int(s): SectionModel([], [], []) for s in np.unique(sections)}
        return self

    def score(self, parts: Sequence[np.ndarray], sections: np.ndarray) -> np.ndarray:
        for section in np.unique(sections):
            self._model(int(section))  # BadInput for a section without references
        return np.asarray(parts[0], np.float64)[:, 0]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SCORER_FILE).write_text(json.dumps(
            {"version": DIRECT_SCORER_VERSION, "type": "direct",
             "sections": sorted(self.sections)}, indent=2))
        return folder / SCORER_FILE

    @classmethod
    def load(cls, folder: str | Path) -> DirectScorer:
        path = Path(folder) / SCORER_FILE
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BadInput(f"{path}: not readable ({err}); re-export the bundle") from err
        if manifest.get("type") != "direct" or manifest.get("version") != DIRECT_SCORER_VERSION:
            raise BadInput(f"{path}: not a direct scorer of version {DIRECT_SCORER_VERSION}; "
                           "re-export the bundle")
        return cls().fit([], np.array(manifest["sections"], dtype=int), [])


@dataclass(kw_only=True)
class Member(ABC):
    """One scoring system inside a bundle (see the module docstring); a subclass per kind owns
    its parts and what it needs to run. ``edge.bundle.manifest`` reads and writes them."""

    name: str
    scorer: SectionScorer
    weight: float = 1.0
    norm: dict[int, tuple[float, float]] = field(default_factory=dict)
    # a member's own per-patch model (the ANP's; OnnxAnp on the edge), run once per new patch,
    # its entry in bundle.json ("file" in the member's folder, ...) and where write_bundle
    # copies its file from; none for the kinds that have no model of their own
    patch_model: PatchScorer | None = None
    model: dict[str, Any] = field(default_factory=dict)
    model_path: Path | None = None

    kind: ClassVar[str]  # its ``kind`` in bundle.json
    embeds: ClassVar[bool] = False  # its parts come from the embedder's outputs
    has_patch_model: ClassVar[bool] = False  # its parts come from its own ``patch_model``
    scores_directly: ClassVar[bool] = False  # its one part already is its score

    @abstractmethod
    def parts(self, window: Window) -> list[np.ndarray]:
        """The member's feature parts [(1, D_i)] of one window."""

    def manifest_fields(self) -> dict[str, Any]:
        """Its kind's own entries in bundle.json (beside name, kind, weight, scorer, norm)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Name, kind, weight and the settings a report shows."""
        return {"name": self.name, "kind": self.kind, "weight": self.weight}

    @property
    def extra_front_end(self) -> FrontEnd | None:
        """Its own front end (frames computed beside the model's), if it has one."""
        return None

    def score(self, window: Window, section: int) -> float:
        return float(self.scorer.score(self.parts(window), np.array([section]))[0])

    def score_nearest(self, window: Window, section: int) -> tuple[float, str | None]:
        """The window's score and the domain of its nearest reference (None: not known)."""
        scores, domains = self.scorer.score_nearest(self.parts(window), section)
        return float(scores[0]), domains[0]

    def standardise(self, score: Score, section: int) -> Score:
        mean, std = self.norm.get(section, (0.0, 1.0))
        return (score - mean) / std


@dataclass(kw_only=True)
class EmbeddingMember(Member):
    """The exported network: per-patch z_S, z_A -> ``pooling`` -> ``variant`` -> scorer."""

    pooling: str = "mean"
    variant: str = "concat"
    variant_weight: float = 0.5

    kind: ClassVar[str] = "embedding"
    embeds: ClassVar[bool] = True

    def parts(self, window: Window) -> list[np.ndarray]:
        if window.section_embeddings is None or window.attribute_embeddings is None:
            raise ValueError("an embedding member needs a window with embeddings")
        section = pool(window.section_embeddings, self.pooling)[None]
        attribute = pool(window.attribute_embeddings, self.pooling)[None]
        return variant_parts(section, attribute, self.variant, self.variant_weight)[0]

    def manifest_fields(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "variant": self.variant,
                "variant_weight": self.variant_weight}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), **self.manifest_fields()}


@dataclass(kw_only=True)
class SpectralMember(Member):
    """Clip statistics of its own front end (``features``) -> scorer; no network."""

    features: SpectralFeatures = field(default_factory=SpectralFeatures)

    kind: ClassVar[str] = "spectral"

    def parts(self, window: Window) -> list[np.ndarray]:
        frames = window.extra_frames[self.name]
        return [self.features.of(frames)[None]]

    def manifest_fields(self) -> dict[str, Any]:
        return {"features": self.features.model_dump()}

    @property
    def extra_front_end(self) -> FrontEnd | None:
        return self.features.front_end


@dataclass(kw_only=True)
class AnpMember(Member):
    """The attentive neural process: its own per-patch model gives target NLLs per partition;
    the window's score is their mean over patches and partitions (``DirectScorer``)."""

    kind: ClassVar[str] = "anp"
    has_patch_model: ClassVar[bool] = True
    scores_directly: ClassVar[bool] = True

    def parts(self, window: Window) -> list[np.ndarray]:
        per_patch = window.patch_outputs.get(self.name)
        if per_patch is None:
            raise ValueError(f"member {self.name!r} needs a window with its patch outputs")
        return [np.array([[pool(per_patch, "mean").mean()]])]  # patches, then partitions

    def manifest_fields(self) -> dict[str, Any]:
        return {"model": self.model}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "partitions": self.model.get("partitions")}


MEMBER_KINDS: dict[str, type[Member]] = {
    cls.kind: cls for cls in (EmbeddingMember, SpectralMember, AnpMember)}


DOMAINS = ("source", "target")


@dataclass
class SectionThreshold:
    """Decision threshold of one section, and the lower level at which an alarm may clear.

    ``threshold``/``clear_threshold`` are calibrated on all the section's normal references
    (pooled); ``domains`` holds the same calibrated on one domain's references alone, for each
    domain with enough of them (bundles written before per-domain thresholds have none).
    """

    threshold: float
    clear_threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)
    domains: dict[str, SectionThreshold] = field(default_factory=dict)

    def for_domain(self, domain: str | None) -> SectionThreshold:
        """The thresholds of ``domain``; the pooled ones for None, "pooled" or a domain
        without its own calibration."""
        return self.domains.get(domain or "pooled", self)


class PatchOutputs(NamedTuple):
    """What ``ScoringSystem.run_patch_models`` gives for P patches (rows in patch order)."""

    section: np.ndarray | None
    attribute: np.ndarray | None
    outputs: dict[str, np.ndarray]

    def rows(self, rows: slice) -> PatchOutputs:
        """The outputs of the patches ``rows`` (one stream's share of a batch)."""
        return PatchOutputs(None if self.section is None else self.section[rows],
                            None if self.attribute is None else self.attribute[rows],
                            {name: out[rows] for name, out in self.outputs.items()})


@dataclass(frozen=True)
class WindowScore:
    """What scoring one window gives: the combined score, each member's raw score, and the
    domain ("source"/"target") of the nearest reference (None when no member can tell)."""

    score: float
    members: dict[str, float]
    domain: str | None


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
    # per section: the quiet level (dB, ``edge.features.quiet_level_db``) of each normal clip
    quiet_levels: dict[int, np.ndarray] = field(default_factory=dict)

    def quiet_range(self, section: int) -> tuple[float, float] | None:
        """The lowest and highest quiet level (dB) of the section's normal clips; None when
        the bundle keeps none."""
        quiet = self.quiet_levels.get(section)
        if quiet is None or not quiet.size:
            return None
        return float(quiet.min()), float(quiet.max())

    @property
    def embeds(self) -> bool:
        return any(m.embeds for m in self.members)

    @property
    def patch_models(self) -> dict[str, PatchScorer]:
        """Per-patch models other than the embedder, by member name."""
        out = {}
        for m in self.members:
            if m.has_patch_model:
                if m.patch_model is None:
                    raise ValueError(f"member {m.name!r} has no patch model loaded")
                out[m.name] = m.patch_model
        return out

    @property
    def extra_front_ends(self) -> dict[str, FrontEnd]:
        return {m.name: front_end for m in self.members
                if (front_end := m.extra_front_end) is not None}

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

    @property
    def domain_member(self) -> Member | None:
        """The first member whose scorer finds nearest references with known domains."""
        for member in self.members:
            if not member.scores_directly and member.scorer.finds_nearest:
                return member
        return None

    def combine(self, member_scores: Mapping[str, Score], section: int) -> Score:
        """One member: its raw score. Several: the weighted sum of standardised scores.
        Scores are floats (one window) or (H,) arrays (many hops at once, elementwise)."""
        if len(self.members) == 1:
            return member_scores[self.members[0].name]
        total = sum(m.weight * m.standardise(member_scores[m.name], section)
                    for m in self.members)
        return total if isinstance(total, np.ndarray) else float(total)  # type: ignore[return-value]

    def score_window(self, window: Window, section: int) -> tuple[float, dict[str, float]]:
        """(score, member scores) of a window of ``section``."""
        assessed = self.assess_window(window, section)
        return assessed.score, assessed.members

    def assess_window(self, window: Window, section: int) -> WindowScore:
        """Score a window of ``section`` and name the domain of its nearest reference (the
        ``domain_member``'s search, made once with its score)."""
        nearest = self.domain_member
        members, domain = {}, None
        for member in self.members:
            if member is nearest:
                members[member.name], domain = member.score_nearest(window, section)
            else:
                members[member.name] = member.score(window, section)
        return WindowScore(self.combine(members, section), members, domain)

    @property
    def runs_patch_models(self) -> bool:
        """True when windows need per-patch model outputs (an embedder or a patch model)."""
        return self.embeds or bool(self.patch_models)

    def run_patch_models(self, batch: np.ndarray) -> PatchOutputs:
        """Every per-patch model of the system on (P, F, T) float32 patches: the embedder's
        section (P, D_S) and attribute (P, D_A) embeddings (None without an embedding
        member) and each patch model's (P, K) outputs by member name. The one way patches are
        run: the daemon (batched across streams), offline clips and calibration call this."""
        section = attribute = None
        if self.embeds:
            section, attribute = self.embedder.embed(batch)
        outputs = {name: model.score_patches(batch)
                   for name, model in self.patch_models.items()}
        return PatchOutputs(section, attribute, outputs)

    def clip_window(self, waveform: np.ndarray) -> Window:
        """A whole clip (N,) as one window: all its patches and frames."""
        spec = spectrogram(waveform, self.front_end)
        section = attribute = None
        outputs: dict[str, np.ndarray] = {}
        if self.runs_patch_models:
            clip_patches = patches(spec, self.patching.patch_frames, self.patching.patch_hop)
            if clip_patches.shape[0] == 0:
                raise BadInput(f"audio of {waveform.shape[0] / self.front_end.sample_rate:.2f} s "
                               "is shorter than one patch; give at least "
                               f"{self.patch_seconds:.2f} s")
            section, attribute, outputs = self.run_patch_models(clip_patches)
        return Window(index=0, start_sample=0, end_sample=int(waveform.shape[0]),
                      section_embeddings=section, attribute_embeddings=attribute,
                      spectrogram=spec,
                      extra_frames={name: spec if fe == self.front_end
                                    else spectrogram(waveform, fe)
                                    for name, fe in self.extra_front_ends.items()},
                      patch_outputs=outputs)

    def score_clip(self, waveform: np.ndarray, section: int) -> tuple[float, dict[str, float]]:
        """Offline score of a whole 16 kHz clip (N,) of ``section``."""
        return self.score_window(self.clip_window(waveform), section)

    def assess_clip(self, waveform: np.ndarray, section: int) -> WindowScore:
        """``assess_window`` of a whole 16 kHz clip (N,) of ``section``."""
        return self.assess_window(self.clip_window(waveform), section)

    @property
    def patch_seconds(self) -> float:
        frames = self.patching.patch_frames
        return ((frames - 1) * self.front_end.hop_length + self.front_end.n_fft) \
            / self.front_end.sample_rate

    def stream(self, window_patches: int, hop_patches: int) -> StreamingWindows:
        """A fresh incremental windower for one stream of this system."""
        return StreamingWindows(self.front_end, self.patching, window_patches, hop_patches,
                                embeds=self.embeds, extra_front_ends=self.extra_front_ends,
                                patch_models=tuple(self.patch_models))


def member_to_manifest(member: Member, folder: str) -> dict[str, Any]:
    """The JSON of a member in bundle.json; its scorer lives in ``folder`` of the bundle.
    (``edge.bundle.manifest`` checks it against the member's model when the bundle is
    written.)"""
    return {"name": member.name, "kind": member.kind, "weight": member.weight,
            "scorer": folder, "norm": {f"{s:02d}": list(v) for s, v in member.norm.items()},
            **member.manifest_fields()}
