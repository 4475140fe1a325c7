"""Training augmentation: another training sound mixed into patches (training/augment.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio import read_audio
from edge.features import DEFAULT_FRONT_END, spectrogram
from training.augment import mix_interference


def _patches(sample_dir, count: int = 4, frames: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Log-magnitude patches of real clips: a fan's and a valve's (B, F, T)."""
    def cut(path):
        spec = spectrogram(read_audio(path), DEFAULT_FRONT_END)
        return np.stack([spec[:, i * frames:(i + 1) * frames] for i in range(count)])
    fan = sorted((sample_dir / "fan" / "train").glob("*.wav"))[0]
    valve = sorted((sample_dir / "valve" / "train").glob("*.wav"))[0]
    return cut(fan), cut(valve)


def mean_power(x: np.ndarray) -> np.ndarray:
    return np.mean(np.exp(2 * x.astype(np.float64)), axis=(1, 2))


def test_the_mix_adds_the_other_sound_at_the_drawn_ratio(sample_dir):
    machine, other = _patches(sample_dir)
    rng = np.random.default_rng(0)
    # 0 dB over the whole patch: the other sound as loud as the machine, the power doubles
    mixed = mix_interference(machine, other, rng, 1.0, (0.0, 0.0), partial=0.0)
    assert mean_power(mixed) == pytest.approx(2 * mean_power(machine), rel=1e-3)
    assert np.all(mixed >= machine - 1e-6)  # power only adds
    # 60 dB under the machine: not heard (a change of under 1 % in magnitude on average)
    quiet = mix_interference(machine, other, rng, 1.0, (60.0, 60.0), partial=0.0)
    assert np.mean(np.abs(quiet - machine)) < 0.01
    # none chosen: the batch as it was, and the input never changed in place
    before = machine.copy()
    assert np.array_equal(mix_interference(machine, other, rng, 0.0, (0.0, 20.0)), machine)
    assert np.array_equal(machine, before)


def test_a_passing_sound_covers_a_stretch_of_the_patch_only(sample_dir):
    machine, other = _patches(sample_dir)
    mixed = mix_interference(machine, other, np.random.default_rng(1), 1.0, (0.0, 0.0),
                             partial=1.0)
    changed = np.any(np.abs(mixed - machine) > 1e-6, axis=1)  # (B, T) frames touched
    for row in changed:
        touched = np.flatnonzero(row)
        assert 16 <= touched.size < row.size
        assert np.all(np.diff(touched) == 1)  # one contiguous stretch
    with pytest.raises(ValueError, match="differ in shape"):
        mix_interference(machine, other[:, :, :10], np.random.default_rng(0), 1.0, (0, 1))
