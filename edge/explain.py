"""Why a window scored high: the explanation an alarm event carries.

- ``members``: each member's raw score and, in an ensemble, its standardised contribution;
  ``driver``: the member that contributed most.
- ``subspaces`` (embedding member): the cosine distance to the nearest normal reference in the
  section subspace (z_S) and in the attribute subspace (z_A), and each one's share.
- ``nearest``: the nearest normal reference clip (file, domain, attributes) when the backend is
  a nearest-neighbour search over clips.
- ``bands``: the frequency bands whose level differs most from the section's normal clips
  (z-scores of the window's mean log spectrum against the references' per-clip means).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle.load import Bundle
from edge.scoring.backends import KnnBackend, cosine_distances
from edge.scoring.scorer import pool
from edge.streaming import Window

TOP_BANDS = 3


def explain_window(bundle: Bundle, window: Window, section: int,
                   member_scores: dict[str, float]) -> dict[str, Any]:
    """A JSON-able explanation of ``window``'s score in ``section`` (see the module doc)."""
    system = bundle.system
    contributions = {m.name: (m.weight * m.standardise(member_scores[m.name], section)
                              if len(system.members) > 1 else member_scores[m.name])
                     for m in system.members}
    out: dict[str, Any] = {
        "members": {name: {"score": round(member_scores[name], 6),
                           "contribution": round(contributions[name], 6)}
                    for name in member_scores},
        "driver": max(contributions, key=lambda name: contributions[name]),
    }
    references = [r for r in bundle.manifest.get("references", []) if r["section"] == section]
    for member in system.members:
        if member.kind == "embedding" and window.section_embeddings is not None:
            out.update(_subspaces(member, window, section, references))
            break
    bands = _bands(bundle, window, section)
    if bands:
        out["bands"] = bands
    return out


def _subspaces(member, window: Window, section: int,
               references: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    parts = member.parts(window)
    backends = member.scorer.sections[section].backends
    transformed = member.scorer.transform(parts, section)
    knn = [b for b in backends if isinstance(b, KnnBackend)]
    if len(knn) == len(backends) and len(references) == knn[0].references.shape[0]:
        index = int(knn[0].neighbours(transformed[0])[0][0, 0])
        nearest = references[index]
        result["nearest"] = {"file": nearest.get("file"), "domain": nearest.get("domain"),
                             "attributes": nearest.get("attributes", {})}
        if window.attribute_embeddings is not None and window.attribute_embeddings.shape[1]:
            z_s = pool(window.section_embeddings, member.pooling)
            z_a = pool(window.attribute_embeddings, member.pooling)
            if member.variant in ("concat", "weighted") and len(knn) == 1:
                ref = knn[0].references[index]
                d_s = float(cosine_distances(z_s[None], ref[None, :z_s.shape[0]])[0, 0])
                d_a = float(cosine_distances(z_a[None], ref[None, z_s.shape[0]:])[0, 0])
                total = max(d_s + d_a, 1e-12)
                result["subspaces"] = {"section": {"distance": round(d_s, 6),
                                                   "share": round(d_s / total, 4)},
                                       "attribute": {"distance": round(d_a, 6),
                                                     "share": round(d_a / total, 4)}}
    return result


def _bands(bundle: Bundle, window: Window, section: int) -> list[dict[str, float]]:
    profile = bundle.system.profiles.get(section) if bundle.system.profiles else None
    if profile is None:
        return []
    mean, std = profile
    level = window.spectrogram.mean(axis=1)
    z = (level - mean) / np.maximum(std, 1e-3)
    edges = bundle.system.front_end.band_edges_hz()
    order = np.argsort(-np.abs(z))[:TOP_BANDS]
    return [{"low_hz": round(float(edges[i, 0]), 1), "high_hz": round(float(edges[i, 1]), 1),
             "z": round(float(z[i]), 3)} for i in order]
