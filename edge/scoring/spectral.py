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
- ``modulation``: how the sound's envelope pulses, not what it holds: a short-frame spectrogram
  (64-point FFT every 16 samples, a 1 kHz envelope rate) in 8 bands of 1 kHz from 250 Hz, the
  modulation spectrum of each band's envelope in one-second blocks (relative to the band's
  level), the median over the blocks, summed in 16 log-spaced modulation bands from 3 to 500
  Hz: (128,) log values, z-scored, Euclidean nearest neighbour. Rotating-machine faults
  (bearing defects, a chipped tooth, a damaged blade, looseness, imbalance) are trains of
  impacts or modulations locked to the shaft, which a 32 ms frame averages away; the plant's
  sounds (a background step, a machine nearby, a forklift) are not locked to this machine's
  shaft, a change of level cancels in the ratio, and the median ignores a transient shorter
  than half the window. On the 10-hour plant-life set (docs/ALARMS.md, session 9) the healthy
  hours' scores spread far less than the log-mel statistics' do, and 10 of 12 faults score
  above all of them.
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
# 32 linear bins of 250 Hz (250-8000 Hz) every millisecond: the envelopes of the modulation system
MODULATION_FRONT_END = FrontEnd(n_fft=64, hop_length=16, f_min=250.0, f_max=8000.0)
Statistic = Literal["mean", "std", "blockstd", "modulation"]


class SpectralFeatures(BaseModel):
    """Which clip statistics of which spectrogram make the feature vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    front_end: FrontEnd = Field(LOG_MEL_FRONT_END, description="spectrogram parameters")
    statistics: tuple[Statistic, ...] = Field(
        ("mean", "std"), description="over time, per row")

    def of(self, spec: np.ndarray) -> np.ndarray:
        """Log spectrogram (F, T) of ``front_end`` -> the feature vector (float64)."""
        frame_rate = self.front_end.sample_rate / self.front_end.hop_length
        return clip_statistics(spec, self.statistics, frame_rate)


SPECTRAL_SYSTEMS: dict[str, SpectralFeatures] = {
    "stats": SpectralFeatures(),
    "bandenergy": SpectralFeatures(front_end=BAND_ENERGY_FRONT_END, statistics=("mean",)),
    "modulation": SpectralFeatures(front_end=MODULATION_FRONT_END, statistics=("modulation",)),
}


def spectral_scorer_config(backend: KnnConfig | GmmConfig | None = None) -> ScorerConfig:
    """The scorer the spectral detectors use: standardised, Euclidean 1-NN by default."""
    return ScorerConfig(backend=backend or KnnConfig(metric="euclidean"), standardize=True)


def clip_statistics(spec: np.ndarray, statistics=("mean", "std"),
                    frame_rate: float = LOG_MEL_FRONT_END.sample_rate
                    / LOG_MEL_FRONT_END.hop_length) -> np.ndarray:
    """Log spectrogram (F, T) at ``frame_rate`` frames per second -> the statistics over time,
    concatenated, float64: (F,) each for mean, std and blockstd, (MODULATION_BANDS *
    len(MODULATION_EDGES_HZ) - 1,) for modulation."""
    spec = np.asarray(spec, dtype=np.float64)
    if spec.shape[1] == 0:
        raise ValueError("spectrogram has no frames; the clip is shorter than one window")
    values = {"mean": lambda: spec.mean(1), "std": lambda: spec.std(1),
              "blockstd": lambda: block_std(spec),
              "modulation": lambda: modulation_spectrum(spec, frame_rate)}
    return np.concatenate([values[name]() for name in statistics])


MODULATION_BANDS = 8  # carrier bands: the rows are split into this many groups
MODULATION_EDGES_HZ = np.geomspace(3.0, 500.0, 17)  # 16 modulation bands
MODULATION_FLOOR = 1e-9


def modulation_spectrum(spec: np.ndarray, frame_rate: float) -> np.ndarray:
    """Log spectrogram (F, T) at ``frame_rate`` frames/s -> (MODULATION_BANDS * 16,) the log
    modulation spectrum of the band envelopes (``modulation`` in the module docstring).

    Each band's envelope is its power summed over its rows; within one-second blocks of frames
    (the whole clip when shorter) the envelope's Hann-windowed spectrum is divided by the
    squared mean level (a modulation index: a level change cancels); the median over the
    blocks (a transient in fewer than half of them does not move it); summed between
    ``MODULATION_EDGES_HZ`` (edges above the Nyquist frequency of the envelope clip to it).
    """
    groups = np.array_split(np.arange(spec.shape[0]), MODULATION_BANDS)
    power = np.exp(2.0 * np.asarray(spec, dtype=np.float64))
    envelope = np.stack([power[rows].sum(0) for rows in groups])  # (B, T)
    block = min(int(round(frame_rate)), spec.shape[1])  # one second, or the whole clip
    blocks = envelope[:, : (envelope.shape[1] // block) * block].reshape(
        MODULATION_BANDS, -1, block)  # (B, K, L)
    level = blocks.mean(2, keepdims=True)
    taper = np.hanning(block + 2)[1:-1]
    pulses = np.abs(np.fft.rfft((blocks - level) * taper, axis=2)) ** 2  # (B, K, L // 2 + 1)
    index = np.median(pulses / np.maximum(level, MODULATION_FLOOR) ** 2 / block, axis=1)
    hz = np.fft.rfftfreq(block, 1.0 / frame_rate)
    bands = [index[:, (hz >= lo) & (hz < hi)].sum(1)
             for lo, hi in zip(MODULATION_EDGES_HZ[:-1], MODULATION_EDGES_HZ[1:], strict=True)]
    return np.log(np.stack(bands, axis=1) + MODULATION_FLOOR).ravel()


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
    return features.of(spectrogram(waveform, features.front_end))
