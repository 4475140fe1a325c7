"""Per-section anomaly scoring of clip features against normal references.

One code path serves every system that scores by distance to normal clips:

- a network run: a clip's patch embeddings are pooled (``pool``) into a section embedding
  z_S (D_S,) and an attribute embedding z_A (D_A,); the inference ``variant`` turns them into
  scoring *parts* (``variant_parts``), each scored by its own backend and summed with weights:

  ========== ============================================ =========
  variant    parts                                         weights
  ========== ============================================ =========
  sections   z_S                                           1
  attributes z_A                                           1
  concat     [z_S / |z_S|, z_A / |z_A|]                    1
  weighted   z_S, z_A                                      w, 1 - w
  ========== ============================================ =========

- the spectral-statistics and band-energy detectors: one part, standardised per section.

References are per section. With ``source_centres`` set, the many source-domain clips are
replaced by that many k-means centres while every target-domain clip is kept, so the few
target clips are not drowned; the nearer reference counts. Each section remembers the domain
of every reference row (a centre is a source reference), so a query can be told which domain
its nearest reference belongs to (``SectionScorer.score_nearest``): the domain whose
threshold applies to it (``edge.bundle.system.SectionThreshold``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import BadInput
from edge.features import FrontEnd, Patching, patches, spectrogram
from edge.scoring.backends import (
    BackendConfig,
    GmmBackend,
    KnnBackend,
    KnnConfig,
    fit_backend,
    kmeans,
    load_backend,
    save_backend,
)

logger = logging.getLogger(__name__)

VARIANTS = ("concat", "weighted", "sections", "attributes")
POOLINGS = ("mean", "std", "meanstd")
Variant = Literal["concat", "weighted", "sections", "attributes"]
Pooling = Literal["mean", "std", "meanstd"]
SCORER_FILE = "scorer.json"
SCORER_VERSION = 1


class Embedder(Protocol):
    """A trained network as scoring sees it (a torch run or an ONNX Runtime session)."""

    front_end: FrontEnd
    patching: Patching

    def embed(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, F, T) float32 patches -> section (P, D_S) and attribute (P, D_A) embeddings."""
        ...


def pool(patch_embeddings: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """(P, D) per-patch embeddings -> (D,) for mean/std, (2D,) for meanstd."""
    x = np.asarray(patch_embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise BadInput(f"no patches to pool (got shape {x.shape}): the clip is shorter than one "
                       "patch; use clips of at least one patch length")
    if pooling == "mean":
        return x.mean(0)
    if pooling == "std":
        return x.std(0)
    if pooling == "meanstd":
        return np.concatenate([x.mean(0), x.std(0)])
    raise BadInput(f"pooling {pooling!r} unknown; use one of {', '.join(POOLINGS)}")


def embed_clip(embedder: Embedder, waveform: np.ndarray,
               pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """16 kHz waveform (N,) -> pooled section (D_S,) and attribute (D_A,) embeddings."""
    spec = spectrogram(waveform, embedder.front_end)
    clip_patches = patches(spec, embedder.patching.patch_frames, embedder.patching.patch_hop)
    if clip_patches.shape[0] == 0:
        raise BadInput(f"clip of {waveform.shape[0]} samples is shorter than one patch "
                       f"({embedder.patching.patch_frames} frames); use longer clips")
    section_emb, attribute_emb = embedder.embed(clip_patches.astype(np.float32))
    return pool(section_emb, pooling), pool(attribute_emb, pooling)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def variant_parts(section_embedding: np.ndarray, attribute_embedding: np.ndarray,
                  variant: str, weight: float = 0.5) -> tuple[list[np.ndarray], list[float]]:
    """Pooled (N, D_S), (N, D_A) -> the parts scored and their weights (table above)."""
    if variant == "sections":
        return [np.asarray(section_embedding, np.float64)], [1.0]
    if variant == "attributes":
        return [np.asarray(attribute_embedding, np.float64)], [1.0]
    if variant == "concat":
        joined = np.concatenate([_unit_rows(section_embedding),
                                 _unit_rows(attribute_embedding)], axis=-1)
        return [joined], [1.0]
    if variant == "weighted":
        if not 0.0 <= weight <= 1.0:
            raise BadInput(f"weight w={weight} outside [0, 1]; give a value between 0 and 1")
        return [np.asarray(section_embedding, np.float64),
                np.asarray(attribute_embedding, np.float64)], [weight, 1.0 - weight]
    raise BadInput(f"variant {variant!r} unknown; use one of {', '.join(VARIANTS)}")


class ScorerConfig(BaseModel):
    """How a section's references score a clip. Stored with results and in bundles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendConfig = Field(default_factory=KnnConfig, description="backend, by type")
    standardize: bool = Field(False, description="z-score each part with the section's refs")
    source_centres: int | None = Field(None, ge=1, description="k-means centres replacing "
                                       "the source references; None keeps every clip")
    seed: int = Field(0, description="k-means seed")


@dataclass
class SectionModel:
    """One section's fitted references: per part a backend and the standardization."""

    backends: list[KnnBackend | GmmBackend]
    means: list[np.ndarray]
    stds: list[np.ndarray]
    # per reference row of the backends: True for a target-domain clip (the rows are the same
    # for every part); None for a scorer saved before domains were kept
    target_rows: np.ndarray | None = None


@dataclass
class SectionScorer:
    """Per-section references for a list of parts; ``weights`` sum the parts' scores."""

    config: ScorerConfig
    weights: list[float]
    sections: dict[int, SectionModel] = field(default_factory=dict)

    def fit(self, parts: Sequence[np.ndarray], sections: np.ndarray,
            domains: Sequence[str]) -> SectionScorer:
        """Fit on the normal references: parts [(N, D_i)], sections (N,), domains (N,)."""
        sections = np.asarray(sections)
        domains_arr = np.asarray(domains)
        if len(parts) != len(self.weights):
            raise ValueError(f"{len(parts)} parts but {len(self.weights)} weights")
        for section in np.unique(sections):
            rows = sections == section
            models = SectionModel([], [], [])
            for part in parts:
                x = np.asarray(part, dtype=np.float64)[rows]
                mean = x.mean(0) if self.config.standardize else np.zeros(x.shape[1])
                std = (np.maximum(x.std(0), 1e-6) if self.config.standardize
                       else np.ones(x.shape[1]))
                models.means.append(mean)
                models.stds.append(std)
                refs, models.target_rows = self._references((x - mean) / std,
                                                            domains_arr[rows])
                models.backends.append(fit_backend(self.config.backend, refs))
            self.sections[int(section)] = models
        return self

    def _references(self, x: np.ndarray, domains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reference rows (R, D) of one part and which of them are target clips (R,)."""
        n_centres = self.config.source_centres
        source = domains != "target"
        if n_centres is None or source.sum() <= n_centres:
            return x, ~source
        metric = getattr(self.config.backend, "metric", "euclidean")
        src = x[source]
        if metric == "cosine":  # spherical k-means: centres of directions
            src = src / np.maximum(np.linalg.norm(src, axis=1, keepdims=True), 1e-12)
        centres = kmeans(src, n_centres, seed=self.config.seed)
        target_rows = np.concatenate([np.zeros(centres.shape[0], bool),
                                      np.ones(int((~source).sum()), bool)])
        return np.concatenate([centres, x[~source]], axis=0), target_rows

    @property
    def finds_nearest(self) -> bool:
        """True when every section searches neighbours and knows its references' domains."""
        return bool(self.sections) and all(
            isinstance(m.backends[0], KnnBackend) and m.target_rows is not None
            for m in self.sections.values())

    def transform(self, parts: Sequence[np.ndarray], section: int) -> list[np.ndarray]:
        """Standardise parts [(Q, D_i)] with ``section``'s statistics."""
        model = self._model(section)
        return [(np.atleast_2d(np.asarray(p, np.float64)) - m) / s
                for p, m, s in zip(parts, model.means, model.stds, strict=True)]

    def score_parts(self, parts: Sequence[np.ndarray], section: int) -> np.ndarray:
        """Parts [(Q, D_i)] of clips of ``section`` -> (Q, n_parts) unweighted part scores."""
        return self._score_parts(parts, section)[0]

    def _score_parts(self, parts: Sequence[np.ndarray], section: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """(Q, n_parts) part scores and, for a knn scorer that knows its references' domains,
        whether each query's nearest reference in the first part is a target clip (Q,)."""
        model = self._model(section)
        transformed = self.transform(parts, section)
        columns, nearest_target = [], None
        for i, (backend, x) in enumerate(zip(model.backends, transformed, strict=True)):
            if i == 0 and isinstance(backend, KnnBackend) and model.target_rows is not None:
                scores, nearest = backend.score_nearest(x)  # the score's own search
                columns.append(scores)
                nearest_target = model.target_rows[nearest]
            else:
                columns.append(backend.score(x))
        return np.stack(columns, axis=1), nearest_target

    def score(self, parts: Sequence[np.ndarray], sections: np.ndarray) -> np.ndarray:
        """Parts [(Q, D_i)] with sections (Q,) -> (Q,) anomaly scores."""
        sections = np.asarray(sections)
        out = np.empty(sections.shape[0])
        weights = np.asarray(self.weights)
        for section in np.unique(sections):
            rows = sections == section
            out[rows] = self.score_parts([np.asarray(p)[rows] for p in parts], int(section)) \
                @ weights
        return out

    def score_nearest(self, parts: Sequence[np.ndarray], section: int
                      ) -> tuple[np.ndarray, list[str | None]]:
        """Parts [(Q, D_i)] of clips of ``section`` -> (Q,) scores and, per clip, the domain
        ("source" or "target") of its nearest reference in the first part; None per clip when
        this scorer does not search neighbours (gmm) or predates stored domains."""
        part_scores, nearest_target = self._score_parts(
            [np.atleast_2d(np.asarray(p)) for p in parts], section)
        scores = part_scores @ np.asarray(self.weights)
        if nearest_target is None:
            return scores, [None] * scores.shape[0]
        return scores, ["target" if t else "source" for t in nearest_target]

    def _model(self, section: int) -> SectionModel:
        if section not in self.sections:
            have = ", ".join(f"{s:02d}" for s in sorted(self.sections)) or "none"
            raise BadInput(f"section {section:02d} has no normal references (sections with "
                           f"references: {have}); enroll normal clips of that section first")
        return self.sections[section]

    def save(self, folder: str | Path) -> Path:
        """Write ``scorer.json`` and one ``.npz`` (plus ``.hnsw``) per section and part."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest: dict = {"version": SCORER_VERSION, "config": self.config.model_dump(),
                          "weights": list(self.weights), "sections": {},
                          "reference_domains": {}}
        for section, model in self.sections.items():
            if model.target_rows is not None:
                name = f"section_{section:02d}_domains.npz"
                np.savez(folder / name, target=np.asarray(model.target_rows, bool))
                manifest["reference_domains"][f"{section:02d}"] = name
            entries = []
            for i, backend in enumerate(model.backends):
                stem = f"section_{section:02d}_part{i}"
                np.savez(folder / f"{stem}_standardize.npz", mean=model.means[i],
                         std=model.stds[i])
                entries.append({"backend": save_backend(backend, folder, stem),
                                "standardize": f"{stem}_standardize.npz"})
            manifest["sections"][f"{section:02d}"] = entries
        (folder / SCORER_FILE).write_text(json.dumps(manifest, indent=2))
        return folder / SCORER_FILE

    @classmethod
    def load(cls, folder: str | Path) -> SectionScorer:
        folder = Path(folder)
        path = folder / SCORER_FILE
        if not path.is_file():
            raise BadInput(f"{path}: no scorer saved there; point at a folder written by "
                           "SectionScorer.save (or a bundle)")
        manifest = json.loads(path.read_text())
        if manifest.get("version") != SCORER_VERSION:
            raise BadInput(f"{path}: scorer version {manifest.get('version')} is not "
                           f"{SCORER_VERSION}; re-export it with this version")
        scorer = cls(ScorerConfig(**manifest["config"]), list(manifest["weights"]))
        for key, entries in manifest["sections"].items():
            model = SectionModel([], [], [])
            for entry in entries:
                with np.load(folder / entry["standardize"], allow_pickle=False) as data:
                    model.means.append(data["mean"])
                    model.stds.append(data["std"])
                model.backends.append(load_backend(entry["backend"], folder))
            domains_file = manifest.get("reference_domains", {}).get(key)
            if domains_file is not None:  # absent in scorers saved before domains were kept
                with np.load(folder / domains_file, allow_pickle=False) as data:
                    model.target_rows = data["target"].astype(bool)
            scorer.sections[int(key)] = model
        return scorer


def section_folds(sections: np.ndarray, n_folds: int = 5, seed: int = 0,
                  eligible: np.ndarray | None = None,
                  in_time_order: np.ndarray | None = None,
                  groups: np.ndarray | None = None) -> np.ndarray:
    """(N,) fold of each clip: the ``eligible`` clips (default all) of each section dealt into
    ``n_folds`` folds (fewer when the section has fewer clips); -1 for the others.

    Clips marked ``in_time_order`` (N,) (consecutive parts of recordings, in index order: an
    enrollment) go into contiguous folds, earlier parts apart from later ones: a clip's
    neighbours in time sound like it, so a fold dealt at random would score each part against
    its own neighbours and promise too much. The others are dealt at random. ``groups`` (N,)
    (the clips' domains): the contiguous folds are cut within each group, so a group enrolled
    after the others (a folder's few target-domain files) is spread over the folds and scored
    against its own kind rather than held out whole.
    """
    sections = np.asarray(sections)
    eligible = np.ones(sections.shape[0], bool) if eligible is None else np.asarray(eligible)
    ordered = np.zeros(sections.shape[0], bool) if in_time_order is None \
        else np.asarray(in_time_order, bool)
    rng = np.random.default_rng(seed)
    folds = np.full(sections.shape[0], -1)
    for section in np.unique(sections):
        rows = np.flatnonzero((sections == section) & eligible & ~ordered)
        if rows.size:
            folds[rows] = rng.permutation(np.arange(rows.size) % min(n_folds, rows.size))
        in_order = (sections == section) & eligible & ordered
        for group in ([None] if groups is None else np.unique(np.asarray(groups)[in_order])):
            rows = np.flatnonzero(in_order if group is None
                                  else in_order & (np.asarray(groups) == group))
            if rows.size:
                count = min(n_folds, rows.size)
                folds[rows] = np.arange(rows.size) * count // rows.size
    return folds


def cross_fit_scores(config: ScorerConfig, weights: list[float], parts: Sequence[np.ndarray],
                     sections: np.ndarray, domains: Sequence[str], n_folds: int = 5,
                     seed: int = 0) -> np.ndarray:
    """Out-of-sample scores (N,) of the references themselves, for thresholds.

    Each clip is scored by a scorer fitted without it (``n_folds``-fold per section; leave-
    one-out when a section has fewer clips): a nearest-neighbour score of a reference against
    itself would be zero.
    """
    sections = np.asarray(sections)
    domains_arr = np.asarray(domains)
    out = np.full(sections.shape[0], np.nan)
    folds = section_folds(sections, n_folds, seed)
    for fold in np.unique(folds):
        held = folds == fold
        for section in np.unique(sections[held]):
            train = (~held) & (sections == section)
            test = held & (sections == section)
            if not train.any():
                continue
            scorer = SectionScorer(config, weights).fit(
                [np.asarray(p)[train] for p in parts], sections[train], domains_arr[train])
            out[test] = scorer.score([np.asarray(p)[test] for p in parts], sections[test])
    return out
