"""Why a window scored high: the explanation an alarm event carries.

- ``members``: each member's raw score and its contribution to the final score (in an
  ensemble, the weighted standardised score); ``driver``: the member that contributed most.
- ``nearest``: the nearest normal reference clip (file, domain, attributes) of the first member
  whose backend searches clips (an embedding or a spectral-statistics member with a knn
  backend), and, for an embedding member, ``subspaces``: how much of the distance to it comes
  from the section subspace (z_S) and how much from the attribute subspace (z_A).
- ``bands`` and ``spans``: the frequency ranges and the moments of the window that depart
  most from the section's normal clips (their mean log spectrum, in units of its spread over
  the normal clips), as ``edge.scoring.explain`` computes them for evaluation reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle.load import Bundle
from edge.bundle.system import EmbeddingMember, Member
from edge.scoring.backends import KnnBackend
from edge.scoring.explain import deviating_bands, deviating_spans, subspace_shares
from edge.scoring.scorer import pool
from edge.streaming import Window

TOP = 3


def explain_window(bundle: Bundle, window: Window, section: int,
                   member_scores: dict[str, float], detail: bool = True) -> dict[str, Any]:
    """A JSON-able explanation of ``window``'s score in ``section`` (see the module doc);
    without ``detail`` only the members and the driver (what a clear event carries)."""
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
    if not detail:
        return out
    references = [r.model_dump(mode="json") for r in bundle.manifest.references
                  if r.section == section]
    for member in system.members:
        nearest = _nearest(member, window, section, references)
        if nearest:
            out.update(nearest)
            break
    profile = system.profiles.get(section)
    if profile is not None:
        mean, spread = profile
        front_end = system.front_end
        reference = mean[:, None]  # (F, 1): the section's normal level per row
        out["bands"] = [_rounded(b) for b in deviating_bands(
            window.spectrogram, reference, front_end.band_edges_hz(), TOP, row_spread=spread)]
        out["spans"] = [_rounded(s) for s in deviating_spans(
            window.spectrogram, reference, front_end.hop_length / front_end.sample_rate,
            front_end.n_fft / front_end.sample_rate, TOP, row_spread=spread)]
    return out


def _nearest(member: Member, window: Window, section: int,
             references: list[dict[str, Any]]) -> dict[str, Any]:
    """The nearest reference clip of a knn member over clips, and the subspace shares of an
    embedding member ({}: a gmm, k-means centres, a member with no neighbours to name)."""
    if member.scores_directly or member.has_patch_model:
        return {}
    backends = member.scorer.sections[section].backends
    if len(backends) != 1 or not isinstance(backends[0], KnnBackend) \
            or backends[0].references.shape[0] != len(references):
        return {}  # a gmm, or k-means centres: no single nearest clip to name
    knn = backends[0]
    index = int(knn.neighbours(member.scorer.transform(member.parts(window), section)[0])[0][0, 0])
    nearest = references[index]
    result: dict[str, Any] = {"nearest": {"file": nearest.get("file"),
                                          "domain": nearest.get("domain"),
                                          "attributes": nearest.get("attributes", {})}}
    if not isinstance(member, EmbeddingMember):
        return result
    assert window.section_embeddings is not None and window.attribute_embeddings is not None
    d_s = window.section_embeddings.shape[1]
    if member.variant == "concat" and window.attribute_embeddings.shape[1]:
        # concat references are [z_S / |z_S|, z_A / |z_A|]: split them back
        shares = subspace_shares(pool(window.section_embeddings, member.pooling),
                                 pool(window.attribute_embeddings, member.pooling),
                                 knn.references[index, :d_s], knn.references[index, d_s:])
        result["subspaces"] = _rounded(shares)
    return result


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(float(v), 6) if isinstance(v, float | np.floating) else v
            for k, v in values.items()}
