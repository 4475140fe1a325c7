"""Why a clip scored high: which subspace, which normal clip, which bands, which moments.

For a scored clip and its nearest normal reference clip:

- ``subspace_shares``: how much of the distance comes from the section subspace (z_S: is it
  still the same unit?) and how much from the attribute subspace (z_A: does it run as in a
  known operating condition?), from the cosine distances in each;
- ``deviating_bands``: the frequency ranges whose level differs most from the nearest normal
  clip (time-averaged log spectrogram, in units of that clip's own spread over time);
- ``deviating_spans``: the time spans where the clip departs most from that normal clip.

Pure numpy; the edge daemon puts the same dict into an alarm event.
"""

from __future__ import annotations

import numpy as np

from edge.features import FrontEnd, spectrogram
from edge.scoring.backends import cosine_distances

_EPS = 1e-6


def subspace_shares(section_embedding: np.ndarray, attribute_embedding: np.ndarray,
                    nearest_section: np.ndarray, nearest_attribute: np.ndarray) -> dict:
    """Cosine distances d_S, d_A to the nearest normal clip and their shares of d_S + d_A."""
    d_s = float(cosine_distances(section_embedding[None], nearest_section[None])[0, 0])
    d_a = float(cosine_distances(attribute_embedding[None], nearest_attribute[None])[0, 0])
    total = d_s + d_a
    share = 0.5 if total <= 0 else d_s / total
    return {"section_distance": d_s, "attribute_distance": d_a,
            "section_share": share, "attribute_share": 1.0 - share,
            "driven_by": "section" if share >= 0.5 else "attribute"}


def _scale(reference_spec: np.ndarray, row_spread: np.ndarray | None) -> np.ndarray:
    """(F, 1) unit of deviation per row: the section's spread of normal levels when known
    (rows where normal clips differ anyway, e.g. speed-dependent harmonics, count less),
    else the reference clip's own spread over time; floored so quiet rows cannot dominate."""
    spread = reference_spec.std(1) if row_spread is None else np.asarray(row_spread)
    floor = max(float(np.median(spread)), _EPS)
    return np.maximum(spread, floor)[:, None]


def deviating_bands(clip_spec: np.ndarray, reference_spec: np.ndarray,
                    band_edges_hz: np.ndarray, top: int = 3,
                    row_spread: np.ndarray | None = None) -> list[dict]:
    """Frequency ranges (merged adjacent rows) that deviate most, strongest first.

    ``clip_spec`` (F, T) and ``reference_spec`` (F, T') log spectrograms, ``band_edges_hz``
    (F, 2), ``row_spread`` (F,) the spread over the section's normal clips of each row's
    time-averaged level (optional). Each entry: ``low_hz``, ``high_hz``, ``deviation`` (the
    difference of time-averaged levels in units of the row's spread, mean over the range).
    """
    scale = _scale(reference_spec, row_spread)[:, 0]
    row_score = np.abs(clip_spec.mean(1) - reference_spec.mean(1)) / scale  # (F,)
    n_rows = max(1, int(np.ceil(0.05 * row_score.size))) * top
    chosen = np.sort(np.argsort(row_score)[::-1][:n_rows])
    ranges: list[list[int]] = []
    for row in chosen:
        if ranges and row == ranges[-1][-1] + 1:
            ranges[-1].append(int(row))
        else:
            ranges.append([int(row)])
    out = [{"low_hz": float(band_edges_hz[r[0], 0]), "high_hz": float(band_edges_hz[r[-1], 1]),
            "deviation": float(row_score[r].mean())} for r in ranges]
    return sorted(out, key=lambda b: b["deviation"], reverse=True)[:top]


def deviating_spans(clip_spec: np.ndarray, reference_spec: np.ndarray, hop_seconds: float,
                    frame_seconds: float, top: int = 3,
                    row_spread: np.ndarray | None = None) -> list[dict]:
    """Time spans (s from the clip start) where the clip departs most, strongest first.

    A frame's deviation is the mean over rows of |clip - reference level| in units of the
    row's spread; frames above the clip's 80th percentile form spans.
    """
    scale = _scale(reference_spec, row_spread)
    frame_score = (np.abs(clip_spec - reference_spec.mean(1, keepdims=True)) / scale).mean(0)
    if frame_score.size == 0:
        return []
    cut = np.quantile(frame_score, 0.8)
    spans: list[list[int]] = []
    for t in np.flatnonzero(frame_score >= cut):
        if spans and t == spans[-1][-1] + 1:
            spans[-1].append(int(t))
        else:
            spans.append([int(t)])
    out = [{"start_s": s[0] * hop_seconds, "end_s": s[-1] * hop_seconds + frame_seconds,
            "deviation": float(frame_score[s].mean())} for s in spans]
    return sorted(out, key=lambda span: span["deviation"], reverse=True)[:top]


def row_spread(reference_specs: list[np.ndarray]) -> np.ndarray:
    """(F,) spread over a section's normal clips [(F, T_i)] of each row's mean level."""
    return np.stack([spec.mean(1) for spec in reference_specs]).std(0)


def explain_spectra(clip_waveform: np.ndarray, nearest_waveform: np.ndarray,
                    front_end: FrontEnd, top: int = 3,
                    spread: np.ndarray | None = None) -> dict:
    """Bands and spans of a clip (N,) against its nearest normal clip (N',), 16 kHz audio.

    ``spread`` (F,): ``row_spread`` of the section's normal clips, when available.
    """
    clip_spec = spectrogram(clip_waveform, front_end)
    reference_spec = spectrogram(nearest_waveform, front_end)
    hop = front_end.hop_length / front_end.sample_rate
    frame = front_end.n_fft / front_end.sample_rate
    return {"bands": deviating_bands(clip_spec, reference_spec, front_end.band_edges_hz(), top,
                                     spread),
            "spans": deviating_spans(clip_spec, reference_spec, hop, frame, top, spread)}
