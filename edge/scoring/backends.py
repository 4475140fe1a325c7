"""Scoring backends: how far a clip's feature vector lies from a section's normal references.

Two backends behind one small protocol, chosen by the ``type`` key of their config:

- ``knn``: mean distance to the k nearest references, cosine or Euclidean. Exact numpy search
  below ``exact_below`` references (faster there, and exact); an hnswlib index above it. Both
  give the same distances to float tolerance. hnswlib saves neither its space nor ``ef``, so
  both are kept in the config and restored on load.
- ``gmm``: negative log-likelihood under a Gaussian mixture fitted by EM in numpy (diagonal or
  full covariances), scored in numpy.

A fitted backend is stored as a JSON-able ``state`` dict plus named numpy arrays (saved as
``.npz`` with ``allow_pickle=False``) and, for a large knn, an hnswlib index file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

_EPS = 1e-12


class KnnConfig(BaseModel):
    """Nearest-neighbour backend: score = mean distance to the k nearest references."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["knn"] = "knn"
    k: int = Field(1, ge=1, description="neighbours averaged")
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="distance")
    exact_below: int = Field(10_000, ge=0, description="references below which numpy searches "
                             "(measured, 128-d, 1 query: numpy 0.15 ms vs hnswlib 0.34 ms at 5 k; "
                             "3.1 ms vs 0.17 ms at 20 k)")
    M: int = Field(16, ge=2, description="hnswlib graph degree")
    ef_construction: int = Field(200, ge=1, description="hnswlib build-time candidate list")
    ef: int = Field(200, ge=1, description="hnswlib query-time candidate list")
    mixtures: int = Field(
        0, ge=0, le=32,
        description="also measure the distance to mixes of two of this many nearest "
                    "references (a window that straddles a change between two known "
                    "operating states pools to a mix of both); 0: plain nearest neighbour")


class GmmConfig(BaseModel):
    """Gaussian-mixture backend: score = negative log-likelihood of the clip."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["gmm"] = "gmm"
    n_components: int = Field(1, ge=1, description="mixture components (fewer if few clips)")
    covariance: Literal["diag", "full"] = Field("diag", description="covariance shape")
    reg_covar: float = Field(1e-3, gt=0.0, description="added to variances, feature units^2")
    max_iter: int = Field(100, ge=1, description="EM iterations")
    seed: int = Field(0, description="initialisation seed")


BackendConfig = Annotated[KnnConfig | GmmConfig, Field(discriminator="type")]


class Backend(Protocol):
    """A fitted scorer of feature vectors against one set of normal references."""

    def score(self, queries: np.ndarray) -> np.ndarray:
        """(Q, D) float -> (Q,) float64 anomaly scores (higher = more anomalous)."""
        ...

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able parameters and named arrays that ``load_backend`` restores."""
        ...


def cosine_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Q, D), (N, D) -> (Q, N) cosine distances 1 - cos, in [0, 2]."""
    q = _unit(queries)
    r = _unit(references)
    return 1.0 - q @ r.T


def euclidean_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Q, D), (N, D) -> (Q, N) Euclidean distances."""
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    squared = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    return np.sqrt(np.maximum(squared, 0.0))


def pairwise_distances(queries: np.ndarray, references: np.ndarray, metric: str) -> np.ndarray:
    """(Q, N) distances under ``metric`` ("cosine" or "euclidean")."""
    if metric == "cosine":
        return cosine_distances(queries, references)
    return euclidean_distances(queries, references)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


MIXING_GRID = np.linspace(0.1, 0.9, 9, dtype=np.float32)  # shares of the first reference
MIXTURE_CHUNK = 64  # queries per block of the mixture search


class KnnBackend:
    """k-nearest-neighbour distance to references (N, D); hnswlib above ``exact_below``."""

    def __init__(self, config: KnnConfig, references: np.ndarray, index=None) -> None:
        self.config = config
        self.references = np.ascontiguousarray(references, dtype=np.float32)
        if self.references.ndim != 2 or self.references.shape[0] == 0:
            raise ValueError(f"references must be (N>0, D), got {self.references.shape}")
        self.index = index
        if index is None and self.uses_index:
            self.index = self._build_index()
        # Exact search: the references' part of the distance is computed once, in float32.
        if self.config.metric == "cosine":
            self._prepared = _unit(self.references).astype(np.float32)
        else:
            self._prepared = np.einsum("nd,nd->n", self.references, self.references)

    @property
    def uses_index(self) -> bool:
        return self.references.shape[0] >= self.config.exact_below

    @property
    def k(self) -> int:
        return min(self.config.k, self.references.shape[0])

    def _build_index(self):
        import hnswlib

        n, dim = self.references.shape
        index = hnswlib.Index(space=_hnsw_space(self.config.metric), dim=dim)
        index.init_index(max_elements=n, ef_construction=self.config.ef_construction,
                         M=self.config.M, random_seed=0)
        index.add_items(self.references, np.arange(n))
        index.set_ef(max(self.config.ef, self.k))
        return index

    def neighbours(self, queries: np.ndarray, k: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> indices (Q, k) and distances (Q, k), nearest first (k: the config's
        unless given, at most the number of references)."""
        k = self.k if k is None else min(k, self.references.shape[0])
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.index is not None:
            labels, distances = self.index.knn_query(queries, k=k)
            distances = distances.astype(np.float64)
            if self.config.metric == "euclidean":  # hnswlib's "l2" is the squared distance
                distances = np.sqrt(np.maximum(distances, 0.0))
            return labels.astype(np.int64), distances
        if self.config.metric == "cosine":
            distances = 1.0 - _unit(queries).astype(np.float32) @ self._prepared.T
        else:
            squared = (np.einsum("qd,qd->q", queries, queries)[:, None] + self._prepared[None]
                       - 2.0 * queries @ self.references.T)
            distances = np.sqrt(np.maximum(squared, 0.0))
        distances = distances.astype(np.float64)
        if k == 1:
            order = np.argmin(distances, axis=1)[:, None]
        else:
            order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(distances, order, axis=1)

    def score(self, queries: np.ndarray) -> np.ndarray:
        return self.score_nearest(queries)[0]

    def score_nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> (Q,) anomaly scores (mean distance to the k nearest; with ``mixtures``
        at most the distance to the nearest mix of two near references) and (Q,) the index
        of each query's nearest reference, from one search."""
        if self.config.mixtures < 2 or self.references.shape[0] < 2:
            indices, distances = self.neighbours(queries)
            return distances.mean(axis=1), indices[:, 0]
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        indices, distances = self.neighbours(queries, max(self.config.mixtures, self.k))
        scores = distances[:, :self.k].mean(axis=1)
        mixed = self._mixture_distances(queries, indices)
        return np.minimum(scores, mixed), indices[:, 0]

    def _mixture_distances(self, queries: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """(Q,) distance of each query to the nearest point a * r_i + (1 - a) * r_j, for a on
        a grid in (0, 1) and i < j among its (Q, M) nearest references."""
        if queries.shape[0] > MIXTURE_CHUNK:  # bound the (Q, P, G, D) array
            return np.concatenate([
                self._mixture_distances(queries[i:i + MIXTURE_CHUNK],
                                        indices[i:i + MIXTURE_CHUNK])
                for i in range(0, queries.shape[0], MIXTURE_CHUNK)])
        first, second = np.triu_indices(indices.shape[1], k=1)
        a = MIXING_GRID[None, None, :, None]
        near = self.references[indices]  # (Q, M, D)
        if self.config.metric == "cosine":
            near = _unit(near)
        points = a * near[:, first, None] + (1 - a) * near[:, second, None]  # (Q, P, G, D)
        q = queries[:, None, None, :]
        if self.config.metric == "cosine":
            cosine = (_unit(points) * _unit(q)).sum(-1)
            distances = 1.0 - cosine
        else:
            distances = np.sqrt(((points - q) ** 2).sum(-1))
        return distances.reshape(distances.shape[0], -1).min(axis=1).astype(np.float64)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        n, dim = self.references.shape
        info = {"config": self.config.model_dump(), "n": n, "dim": dim,
                "space": _hnsw_space(self.config.metric), "uses_index": self.uses_index}
        return info, {"references": self.references}


def _hnsw_space(metric: str) -> str:
    return "cosine" if metric == "cosine" else "l2"


class GmmBackend:
    """Gaussian mixture with weights (K,), means (K, D) and covariances (K, D) or (K, D, D)."""

    def __init__(self, config: GmmConfig, weights: np.ndarray, means: np.ndarray,
                 covariances: np.ndarray) -> None:
        self.config = config
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.covariances = np.asarray(covariances, dtype=np.float64)

    def score(self, queries: np.ndarray) -> np.ndarray:
        return -_gmm_log_likelihood(np.atleast_2d(queries), self.weights, self.means,
                                    self.covariances, self.config.covariance)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return ({"config": self.config.model_dump(), "dim": int(self.means.shape[1])},
                {"weights": self.weights, "means": self.means, "covariances": self.covariances})


def _component_log_densities(x: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                             covariance: str) -> np.ndarray:
    """(N, D) -> (N, K) log N(x | mean_k, cov_k)."""
    x = np.asarray(x, dtype=np.float64)
    n, dim = x.shape
    out = np.empty((n, means.shape[0]))
    for k, mean in enumerate(means):
        diff = x - mean
        if covariance == "diag":
            var = covariances[k]
            maha = (diff * diff / var).sum(1)
            logdet = np.log(var).sum()
        else:
            chol = np.linalg.cholesky(covariances[k])
            solved = np.linalg.solve(chol, diff.T)
            maha = (solved * solved).sum(0)
            logdet = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (dim * np.log(2.0 * np.pi) + logdet + maha)
    return out


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _gmm_log_likelihood(x, weights, means, covariances, covariance) -> np.ndarray:
    log_dens = _component_log_densities(x, means, covariances, covariance)
    return _logsumexp(log_dens + np.log(weights)[None, :], axis=1)


def fit_gmm(config: GmmConfig, features: np.ndarray) -> GmmBackend:
    """EM on (N, D) features, k-means++ initialisation; K is capped at N."""
    x = np.asarray(features, dtype=np.float64)
    n, dim = x.shape
    n_components = min(config.n_components, n)
    means = kmeans(x, n_components, seed=config.seed)
    assign = np.argmin(euclidean_distances(x, means), axis=1)
    resp = np.eye(n_components)[assign]
    weights, means, covariances = _m_step(x, resp, config)
    previous = -np.inf
    for _ in range(config.max_iter):
        log_joint = _component_log_densities(x, means, covariances, config.covariance) \
            + np.log(weights)[None, :]
        log_norm = _logsumexp(log_joint, axis=1)
        resp = np.exp(log_joint - log_norm[:, None])
        weights, means, covariances = _m_step(x, resp, config)
        current = float(log_norm.mean())
        if abs(current - previous) < 1e-6:
            break
        previous = current
    return GmmBackend(config, weights, means, covariances)


def _m_step(x: np.ndarray, resp: np.ndarray, config: GmmConfig):
    counts = resp.sum(0) + 10 * np.finfo(float).eps
    weights = counts / counts.sum()
    means = (resp.T @ x) / counts[:, None]
    if config.covariance == "diag":
        sq = (resp.T @ (x * x)) / counts[:, None]
        covariances = np.maximum(sq - means * means, 0.0) + config.reg_covar
    else:
        covariances = np.empty((means.shape[0], x.shape[1], x.shape[1]))
        for k in range(means.shape[0]):
            diff = x - means[k]
            covariances[k] = (resp[:, k, None] * diff).T @ diff / counts[k]
            covariances[k].flat[:: x.shape[1] + 1] += config.reg_covar
    return weights, means, covariances


def kmeans(features: np.ndarray, n_clusters: int, seed: int = 0, n_iter: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding on (N, D): returns centres (min(K, N), D)."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    n_clusters = min(n_clusters, n)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, n_clusters):
        d2 = euclidean_distances(x, np.array(centres)).min(1) ** 2
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(x[pick])
    centres_arr = np.array(centres)
    for _ in range(n_iter):
        assign = np.argmin(euclidean_distances(x, centres_arr), axis=1)
        updated = np.array([x[assign == c].mean(0) if np.any(assign == c) else centres_arr[c]
                            for c in range(n_clusters)])
        if np.allclose(updated, centres_arr):
            break
        centres_arr = updated
    return centres_arr


def fit_backend(config: KnnConfig | GmmConfig, features: np.ndarray) -> KnnBackend | GmmBackend:
    """Fit the backend that ``config.type`` names on references (N, D)."""
    if config.type == "knn":
        return KnnBackend(config, features)
    return fit_gmm(config, features)


def save_backend(backend: KnnBackend | GmmBackend, folder: Path, stem: str) -> dict:
    """Write ``<stem>.npz`` (and ``<stem>.hnsw`` for an indexed knn); return the JSON state."""
    info, arrays = backend.state()
    np.savez(folder / f"{stem}.npz", **arrays)  # type: ignore[arg-type]
    info["arrays"] = f"{stem}.npz"
    if isinstance(backend, KnnBackend) and backend.index is not None:
        backend.index.save_index(str(folder / f"{stem}.hnsw"))
        info["index"] = f"{stem}.hnsw"
    return info


def load_backend(info: dict, folder: Path) -> KnnBackend | GmmBackend:
    """Inverse of ``save_backend``: restores space, dim and ``ef`` of an hnswlib index."""
    with np.load(folder / info["arrays"], allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    config = info["config"]
    if config["type"] == "knn":
        knn_config = KnnConfig(**config)
        index = None
        if info.get("index"):
            import hnswlib

            index = hnswlib.Index(space=info["space"], dim=int(info["dim"]))
            index.load_index(str(folder / info["index"]), max_elements=int(info["n"]))
            index.set_ef(max(knn_config.ef, knn_config.k))
        return KnnBackend(knn_config, arrays["references"], index=index)
    return GmmBackend(GmmConfig(**config), arrays["weights"], arrays["means"],
                      arrays["covariances"])
