"""Augmentation of training patches: other sounds mixed in, as a plant mixes them.

A plant adds to a healthy machine's sound what the machine never made: another machine
starting, a forklift passing, a background that steps up (docs/ALARMS.md: the detectors'
false alarms follow these). ``mix_interference`` adds to some patches of a batch a patch of
another training clip (any section or machine type: the training set's own sounds as the
interference, so nothing is downloaded), at a random signal-to-interference ratio, over the
whole patch or a random stretch of it. The labels stay those of the machine, so the surrogate
task learns embeddings that do not move when something else is heard beside the unit.

Patches are natural-log magnitudes (``edge.features.spectrogram``); two sounds of unrelated
phase add in power, so the mix is 0.5 * log(exp(2 a) + g^2 exp(2 b)).
"""

from __future__ import annotations

import numpy as np


def mix_interference(patches: np.ndarray, others: np.ndarray, rng: np.random.Generator,
                     probability: float, snr_db: tuple[float, float],
                     partial: float = 0.5) -> np.ndarray:
    """(B, F, T) log-magnitude patches with ``others`` (B, F, T) mixed into a share
    ``probability`` of them, each at a signal-to-interference ratio drawn uniformly from
    ``snr_db`` (dB, mean power over the patch); a share ``partial`` of the mixed ones get the
    interference over a random stretch of frames only (a passing event). Returns a new array.
    """
    if patches.shape != others.shape:
        raise ValueError(f"patches {patches.shape} and others {others.shape} differ in shape")
    out = np.array(patches, dtype=np.float32, copy=True)
    batch, _, frames = patches.shape
    chosen = np.flatnonzero(rng.random(batch) < probability)
    for row in chosen:
        a = patches[row].astype(np.float64)
        b = others[row].astype(np.float64)
        snr = rng.uniform(*snr_db)
        # gain^2 that puts the interference snr dB below the patch's mean power
        log_gain2 = (np.log(np.mean(np.exp(2 * a))) - np.log(np.mean(np.exp(2 * b)))
                     - snr * np.log(10) / 10)
        interference = 2 * b + log_gain2
        if rng.random() < partial:
            length = int(rng.integers(max(1, frames // 4), frames + 1))
            start = int(rng.integers(0, frames - length + 1))
            outside = np.ones(frames, bool)
            outside[start:start + length] = False
            interference[:, outside] = -np.inf
        out[row] = (0.5 * np.logaddexp(2 * a, interference)).astype(np.float32)
    return out
