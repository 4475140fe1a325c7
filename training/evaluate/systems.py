"""Per-clip anomaly scores of a system on one machine type's test clips.

Every system ends in a ``MachineScores``: the test clips, their scores, and out-of-sample
scores of normal training clips per section (for thresholds and for standardising scores in
ensembles). Reports, thresholds and ensembles only ever see ``MachineScores``, so a network
run, the spectral detectors, the autoencoder and (later) an exported bundle share them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.audio import read_audio
from edge.dataset import Clip, Dataset
from edge.errors import BadInput
from edge.features import FrontEnd
from edge.progress import track
from edge.scoring.backends import GmmConfig, KnnConfig, pairwise_distances
from edge.scoring.explain import subspace_shares
from edge.scoring.scorer import (
    Embedder,
    ScorerConfig,
    SectionScorer,
    cross_fit_scores,
    embed_clip,
    variant_parts,
)
from edge.scoring.spectral import SPECTRAL_SYSTEMS, spectral_features, spectral_scorer_config

logger = logging.getLogger(__name__)

SPECTRAL_NAMES = tuple(SPECTRAL_SYSTEMS)


@dataclass
class MachineScores:
    """Scores of one system on one machine type's test clips."""

    system: str
    machine: str
    clips: list[Clip]
    scores: np.ndarray                      # (N,) one per test clip, higher = more anomalous
    calibration: dict[int, np.ndarray]      # section -> (n,) out-of-sample normal scores
    settings: dict = field(default_factory=dict)
    # section -> a fixed decision threshold (a bundle's own); else calibrated from calibration
    thresholds: dict[int, float] = field(default_factory=dict)
    # (N,) the threshold each test clip is decided with, when it is the clip's own rather than
    # its section's (a bundle: the domain of the nearest reference), and whose it is per clip
    # ("source", "target" or "pooled")
    decision_thresholds: np.ndarray | None = None
    decision_domains: list[str] = field(default_factory=list)
    explanations: dict[str, dict] = field(default_factory=dict)
    nearest: dict[str, Clip] = field(default_factory=dict)   # test clip -> nearest normal clip
    subspaces: dict[str, dict] = field(default_factory=dict)  # test clip -> subspace_shares
    front_end: FrontEnd | None = None                         # spectrogram for explanations

    def section_rows(self, section: int) -> np.ndarray:
        return np.array([c.section == section for c in self.clips], dtype=bool)

    @property
    def sections(self) -> list[int]:
        return sorted({c.section for c in self.clips})


def split_clips(dataset: Dataset, machine: str) -> tuple[list[Clip], list[Clip]]:
    """Normal training clips and test clips of ``machine``; BadInput when either is missing."""
    train = dataset.select(machine=machine, split="train", label="normal")
    train += [c for c in dataset.select(machine=machine, split="train") if c.label is None]
    if not train:
        raise BadInput(f"{dataset.root}/{machine}/train: no normal training clips to use as "
                       "references; add them (the DCASE development layout has them)")
    test = labelled_test_clips(dataset, machine)
    missing = sorted({c.section for c in test} - {c.section for c in train})
    if missing:
        raise BadInput(f"{machine} section(s) {', '.join(f'{s:02d}' for s in missing)}: test "
                       "clips but no normal training clips (references); add training clips "
                       "of that section or remove its test clips")
    return train, test


def labelled_test_clips(dataset: Dataset, machine: str) -> list[Clip]:
    """Test clips of ``machine``, each with label and domain; BadInput when there are none."""
    test = dataset.select(machine=machine, split="test")
    if not test:
        raise BadInput(f"{dataset.root}/{machine}/test: no test clips to score; add them or "
                       "point --data at a data set with a test folder")
    unlabelled = [c.name for c in test if c.label is None or c.domain is None]
    if unlabelled:
        raise BadInput(f"{dataset.root}/{machine}/test: {len(unlabelled)} clip(s) without "
                       f"label or domain (e.g. {unlabelled[0]}); evaluation needs the "
                       "development layout or ground_truth_*.csv files beside the data")
    return test


def score_by_references(system: str, machine: str, train: Sequence[Clip],
                        test: Sequence[Clip], featurize: Callable[[Clip], list[np.ndarray]],
                        weights: list[float], config: ScorerConfig,
                        settings: dict) -> tuple[MachineScores, SectionScorer, list]:
    """Fit a ``SectionScorer`` on the training clips' parts and score the test clips.

    ``featurize(clip)`` gives the clip's parts (one vector per part). Returns the scores, the
    fitted scorer and the reference parts (for explanations).
    """
    train_parts = _stack([featurize(c) for c in track(train, f"{system} {machine}: references")])
    test_parts = _stack([featurize(c) for c in track(test, f"{system} {machine}: test clips")])
    sections = np.array([c.section for c in train])
    domains = [c.domain or "source" for c in train]
    scorer = SectionScorer(config, weights).fit(train_parts, sections, domains)
    scores = scorer.score(test_parts, np.array([c.section for c in test]))
    normal = cross_fit_scores(config, weights, train_parts, sections, domains, seed=config.seed)
    calibration = {int(s): normal[sections == s] for s in np.unique(sections)}
    result = MachineScores(system, machine, list(test), scores, calibration,
                           {**settings, "scorer": config.model_dump(), "weights": weights})
    result.nearest = nearest_references(scorer, train, test, train_parts, test_parts)
    return result, scorer, [train_parts, test_parts]


def nearest_references(scorer: SectionScorer, train: Sequence[Clip], test: Sequence[Clip],
                       train_parts: list[np.ndarray], test_parts: list[np.ndarray]
                       ) -> dict[str, Clip]:
    """Each test clip's nearest normal training clip of its section (weighted part distance)."""
    metric = getattr(scorer.config.backend, "metric", "euclidean")
    train_sections = np.array([c.section for c in train])
    test_sections = np.array([c.section for c in test])
    out: dict[str, Clip] = {}
    for section in np.unique(test_sections):
        tr = np.flatnonzero(train_sections == section)
        te = np.flatnonzero(test_sections == section)
        refs = scorer.transform([p[tr] for p in train_parts], int(section))
        queries = scorer.transform([p[te] for p in test_parts], int(section))
        distance = sum(w * pairwise_distances(q, r, metric)
                       for w, q, r in zip(scorer.weights, queries, refs, strict=True))
        for row, best in zip(te, np.argmin(distance, axis=1), strict=True):
            out[test[row].name] = train[tr[best]]
    return out


def _stack(rows: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.stack([row[i] for row in rows]) for i in range(len(rows[0]))]


def score_spectral(dataset: Dataset, machine: str, system: str = "stats",
                   backend: str = "knn") -> MachineScores:
    """The spectral-statistics (``stats``) or ``bandenergy`` detector on one machine type."""
    if system not in SPECTRAL_SYSTEMS:
        raise BadInput(f"system {system!r} unknown; use one of {', '.join(SPECTRAL_NAMES)}")
    features = SPECTRAL_SYSTEMS[system]
    backend_config = KnnConfig(metric="euclidean") if backend == "knn" else GmmConfig()
    config = spectral_scorer_config(backend=backend_config)
    train, test = split_clips(dataset, machine)
    cache: dict = {}

    def featurize(clip: Clip) -> list[np.ndarray]:
        if clip.path not in cache:
            cache[clip.path] = spectral_features(read_audio(clip.path), features)
        return [cache[clip.path]]

    result, _, _ = score_by_references(system, machine, train, test, featurize, [1.0], config,
                                       {"features": features.model_dump(mode="json")})
    result.front_end = features.front_end
    return result


def score_embedder(dataset: Dataset, machine: str, embedder: Embedder, system: str,
                   variant: str = "concat", weight: float = 0.5, backend: str = "knn",
                   pooling: str = "mean", source_centres: int | None = None,
                   k: int = 1, cache: dict | None = None) -> MachineScores:
    """A network's pooled embeddings, scored with one inference ``variant``."""
    if variant != "sections" and getattr(embedder, "attribute_dim", 1) == 0:
        raise BadInput(f"variant {variant!r} needs an attribute embedding, but this model has "
                       "one embedding only (objective mtl, arcface or sections); use "
                       "--variant sections")
    train, test = split_clips(dataset, machine)
    cache = {} if cache is None else cache  # pass one dict to embed each clip once per run

    def embeddings(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        key = (clip.path, pooling)
        if key not in cache:
            cache[key] = embed_clip(embedder, read_audio(clip.path), pooling)
        return cache[key]

    def featurize(clip: Clip) -> list[np.ndarray]:
        section_emb, attribute_emb = embeddings(clip)
        parts, _ = variant_parts(section_emb[None], attribute_emb[None], variant, weight)
        return [p[0] for p in parts]

    _, weights = variant_parts(np.zeros((1, 1)), np.zeros((1, 1)), variant, weight)
    backend_config = KnnConfig(metric="cosine", k=k) if backend == "knn" else GmmConfig()
    config = ScorerConfig(backend=backend_config, source_centres=source_centres)
    result, _, _ = score_by_references(
        system, machine, train, test, featurize, weights, config,
        {"variant": variant, "weight": weight, "pooling": pooling})
    for clip in test:
        near = result.nearest[clip.name]
        result.subspaces[clip.name] = subspace_shares(*embeddings(clip), *embeddings(near))
    result.front_end = embedder.front_end
    return result


def score_bundle(dataset: Dataset, bundle) -> MachineScores:
    """The deployed path on the bundle's machine type: ``bundle.system.assess_clip`` per test
    clip (the edge front end, ONNX Runtime, the bundle's scorers and ensemble), decided as the
    edge's default ``domain: auto`` decides: each clip against its section's threshold of the
    domain of its nearest reference, the pooled one where the bundle cannot tell or has none
    for that domain. ``thresholds`` keeps the pooled ones. ``bundle``: an
    ``edge.bundle.load.Bundle``."""
    machine, system = bundle.machine, bundle.system
    if machine not in dataset.machines:
        raise BadInput(f"bundle {bundle.path} is for machine type {machine} but {dataset.root} "
                       f"holds {', '.join(dataset.machines) or 'none'}; evaluate it on data of "
                       f"{machine} or pick the bundle of one of those")
    test = labelled_test_clips(dataset, machine)
    for section in sorted({c.section for c in test}):
        system.check_section(section)
    assessed = [system.assess_clip(read_audio(c.path), c.section)
                for c in track(test, f"bundle {machine}: test clips")]
    scores = np.array([a.score for a in assessed])
    decided, domains = [], []  # per clip: the thresholds used, and whose
    for clip, result in zip(test, assessed, strict=True):
        pooled = system.thresholds[clip.section]
        decided.append(pooled.for_domain(result.domain))
        domains.append("pooled" if decided[-1] is pooled else str(result.domain))
    counts = Counter(f"{r.section:02d}" for r in bundle.manifest.references)
    members = [m.summary() for m in system.members]
    result = MachineScores(
        f"bundle:{'+'.join(m.name for m in system.members)}", machine, test, scores, {},
        {"bundle": str(bundle.path), "members": members, "provider": bundle.provider,
         "chosen_by": bundle.manifest.system.chosen_by,
         "references": dict(sorted(counts.items())),
         "domain_member": system.domain_member.name if system.domain_member else None},
        thresholds={s: t.threshold for s, t in system.thresholds.items()},
        decision_thresholds=np.array([t.threshold for t in decided]),
        decision_domains=domains)
    result.front_end = system.front_end
    return result


def score_anp(dataset: Dataset, machine: str, run, system: str = "anp", partitions: int = 8,
              seed: int = 0) -> MachineScores:
    """The attentive neural process (ANP-Boot) of ``run`` (``training.anp.LoadedAnp``).

    A clip's score is its mean target NLL over ``partitions`` random context/target
    partitions (``LoadedAnp.boot_clip``); the spread over partitions is reported in
    ``settings["boot_spread"]``. Calibration scores are those of the normal clips the run
    held out of training; a section with fewer than 2 of them falls back to its training
    clips (in-sample, named in ``settings["calibration"]``).
    """
    if machine not in run.machines:
        raise BadInput(f"run {run.run_dir} was trained on {', '.join(run.machines)}, not "
                       f"{machine}; give runs of the data set's machine types")
    train, test = split_clips(dataset, machine)
    boot = {}

    def clip_boot(clip: Clip) -> np.ndarray:
        if clip.path not in boot:
            boot[clip.path] = run.boot_clip(read_audio(clip.path), partitions, seed)
        return boot[clip.path]

    test_boot = np.stack([clip_boot(c) for c in track(test, f"{system} {machine}: test clips")]
                         )  # (N, partitions)
    short = [c.name for c, row in zip(test, test_boot, strict=True) if not np.isfinite(row).all()]
    if short:
        raise BadInput(f"{machine}: {len(short)} test clip(s) shorter than one patch (e.g. "
                       f"{short[0]}); the ANP needs at least one {run.patching.patch_frames}-"
                       "frame patch per clip")
    held = set(run.validation_clips)
    calibration, in_sample = {}, []
    for section in sorted({c.section for c in train}):
        members = [c for c in train if c.section == section]
        chosen = [c for c in members if f"{c.machine}/{c.name}" in held]
        if len(chosen) < 2:
            chosen = members
            in_sample.append(f"{section:02d}")
        calibration[section] = np.array([clip_boot(c).mean() for c in chosen])
    if in_sample:
        logger.warning("%s section(s) %s: fewer than 2 held-out normal clips; thresholds and "
                       "standardisation use training clips (raise --val-fraction)", machine,
                       ", ".join(in_sample))
    scores, spread = test_boot.mean(1), test_boot.std(1)
    settings = {
        "objective": "anp", "run": str(run.run_dir), "partitions": partitions, "seed": seed,
        "checkpoint_weights": run.weights,
        "boot_spread": {"mean": float(spread.mean()), "median": float(np.median(spread)),
                        "max": float(spread.max()),
                        "relative_to_score_spread": float(spread.mean()
                                                          / max(scores.std(), 1e-12))},
        "calibration": {"from": "held-out normal clips", "in_sample_sections": in_sample},
    }
    result = MachineScores(system, machine, list(test), scores, calibration, settings)
    result.front_end = run.front_end
    return result
