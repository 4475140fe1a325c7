"""Detectors without a network: spectral statistics and band energy (numpy only).

- ``stats``: per-frequency mean and standard deviation over the clip of the 128-band log-mel
  spectrogram (F = 128 -> a (256,) vector), z-scored with the section's normal references,
  Euclidean nearest neighbour (or a Gaussian, ``backend.type = "gmm"``). Candidate for a
  stream-robust default, not yet the default: ``statistics=("mean", "blockstd")`` (spread
  within one-second blocks, so a change of operating state is not counted as spread) with
  ``KnnConfig(mixtures=8)`` (a window straddling a state change is near a mix of two
  references): official 71.2 against 69.2 on one synthetic set (fan, gearbox, valve, 3
  sections, 60 + 6 training clips, seed 1), and the straddling bumps of out-of-sample hop
  scores fell from 26 to 6 on the demo's gearbox (docs/ALARMS.md).
- ``bandenergy``: mean log energy of the clip in 32 mel bands (32,), z-scored likewise,
  Euclidean nearest neighbour: the simplest baseline a learned system must beat.

No training: the "model" is the references of each section. Both run on the edge, e.g. at a
site before a model exists for its machine.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.features import LOG_MEL_FRONT_END, FrontEnd, spectrogram
from edge.scoring.backends import GmmConfig, KnnConfig
from edge.scoring.scorer import ScorerConfig

BAND_ENERGY_FRONT_END = FrontEnd(n_fft=1024, hop_length=512, f_min=0.0, f_max=8000.0, n_mels=32)


class SpectralFeatures(BaseModel):
    """Which clip statistics of which spectrogram make the feature vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    front_end: FrontEnd = Field(LOG_MEL_FRONT_END, description="spectrogram parameters")
    statistics: tuple[Literal["mean", "std", "blockstd"], ...] = Field(
        ("mean", "std"), description="over time, per row")


SPECTRAL_SYSTEMS: dict[str, SpectralFeatures] = {
    "stats": SpectralFeatures(),
    "bandenergy": SpectralFeatures(front_end=BAND_ENERGY_FRONT_END, statistics=("mean",)),
}


def spectral_scorer_config(backend: KnnConfig | GmmConfig | None = None) -> ScorerConfig:
    """The scorer the spectral detectors use: standardised, Euclidean 1-NN by default."""
    return ScorerConfig(backend=backend or KnnConfig(metric="euclidean"), standardize=True)


def clip_statistics(spec: np.ndarray, statistics=("mean", "std")) -> np.ndarray:
    """Log spectrogram (F, T) -> (F * len(statistics),) statistics over time, float64."""
    spec = np.asarray(spec, dtype=np.float64)
    if spec.shape[1] == 0:
        raise ValueError("spectrogram has no frames; the clip is shorter than one window")
    values = {"mean": lambda: spec.mean(1), "std": lambda: spec.std(1),
              "blockstd": lambda: block_std(spec)}
    return np.concatenate([values[name]() for name in statistics])


STD_BLOCK_FRAMES = 32  # about one second at hop 512 and 16 kHz


def block_std(spec: np.ndarray, block: int = STD_BLOCK_FRAMES) -> np.ndarray:
    """(F, T) -> (F,) the standard deviation within consecutive blocks of ``block`` frames,
    averaged over the blocks (a last partial block is weighted by its frames).

    Unlike the plain standard deviation over the clip, it does not count the difference
    between two operating states as spread: a window that straddles a change from state A to
    state B has (nearly) the mix a * s_A + (1 - a) * s_B of the two states' values, as its
    mean has, so a mixture-aware nearest neighbour (``KnnConfig.mixtures``) recognises it."""
    t = spec.shape[1]
    if t <= block:
        return spec.std(1)
    stds, weights = [], []
    for start in range(0, t, block):
        part = spec[:, start:start + block]
        if part.shape[1] < 2:
            continue
        stds.append(part.std(1))
        weights.append(part.shape[1])
    return np.average(np.stack(stds), axis=0, weights=np.asarray(weights, np.float64))


def spectral_features(waveform: np.ndarray, features: SpectralFeatures) -> np.ndarray:
    """16 kHz waveform (N,) -> the detector's feature vector (F * n_statistics,)."""
    return clip_statistics(spectrogram(waveform, features.front_end), features.statistics)
