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
- ``level``: the level of the window's quietest frames (``edge.features.quiet_level_db``)
  beside the range of the section's normal clips, and a ``note`` when it lies more than
  ``QUIET_MARGIN_DB`` outside it. A unit barely above its plant's background (a valve's
  clicks) scores a quieter or louder plant as it scores a fault (docs/ALARMS.md, session 10);
  the note tells the operator that the level moved, so "not a fault" is an informed answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle.load import Bundle
from edge.bundle.system import EmbeddingMember, Member
from edge.features import quiet_level_db
from edge.scoring.backends import KnnBackend
from edge.scoring.explain import deviating_bands, deviating_spans, subspace_shares
from edge.scoring.scorer import pool
from edge.streaming import Window

TOP = 3
QUIET_MARGIN_DB = 1.0  # a quiet level this far outside the normal clips' range gets a note


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
    quiet = system.quiet_levels.get(section)
    if quiet is not None and quiet.size:
        out["level"] = level_context(quiet_level_db(window.spectrogram), quiet)
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


def level_context(quiet_db: float, normal_quiet_db: np.ndarray) -> dict[str, Any]:
    """A window's quiet level (dB) against the (N,) quiet levels of the normal clips: both,
    how far outside their range it lies (dB, signed, 0 inside) and, beyond
    ``QUIET_MARGIN_DB``, a note for people."""
    low, high = float(np.min(normal_quiet_db)), float(np.max(normal_quiet_db))
    outside = quiet_db - high if quiet_db > high else quiet_db - low if quiet_db < low else 0.0
    out: dict[str, Any] = {"quiet_db": round(quiet_db, 2),
                           "normal_quiet_db": [round(low, 2), round(high, 2)],
                           "outside_db": round(outside, 2)}
    if abs(outside) > QUIET_MARGIN_DB:
        out["note"] = (f"the quietest moments of this window are {abs(outside):.1f} dB "
                       f"{'louder' if outside > 0 else 'quieter'} than in any normal clip of "
                       f"this unit ({low:.1f} to {high:.1f} dB): the level changed, the "
                       "machine's or the plant's around it; if this is not a fault, enroll it "
                       "as normal ('asd-edge enroll --episode ID')")
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
