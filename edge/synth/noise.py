"""Plant-floor background: what a microphone next to a machine also hears.

A ``Plant`` is the site (drawn once per machine type and seed): the colour of its broadband
noise (pink to brown, with a ventilation bump), its mains hum, one to three distant machines
(tonal, low-passed by distance) and what its impacts ring like. Each clip then draws what
varies from minute to minute: swells (a forklift, a door), how loud the distant machines run,
random impacts (tools, parts dropped). The result has unit RMS; the caller scales it to
the clip's signal-to-noise ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.synth import dsp


@dataclass(frozen=True)
class Plant:
    """The acoustic site: what stays the same from clip to clip."""

    exponent: float
    corner_hz: float
    bump_gain: float
    bump_hz: float
    bump_octaves: float
    hum_amps: np.ndarray
    hum_gain: float
    distant_hz: tuple[float, ...]
    distant_amps: tuple[np.ndarray, ...]
    distant_gain: tuple[float, ...]
    knock_rate_hz: float
    knock: dsp.Structure
    mains_hz: float = 50.0


def draw_plant(rng: np.random.Generator) -> Plant:
    count = int(rng.integers(1, 4))
    distant_hz = tuple(rng.uniform(18, 160, count).tolist())
    distant_amps = tuple(
        dsp.harmonic_amplitudes(40, rng.uniform(0.8, 1.8), rng, spread_db=6.0)
        / (1 + (f0 * np.arange(1, 41) / rng.uniform(600, 3000)) ** 2)  # distance absorbs highs
        for f0 in distant_hz)
    return Plant(rng.uniform(0.6, 1.6), rng.uniform(40, 120), rng.uniform(0.05, 0.4),
                 rng.uniform(300, 2500), rng.uniform(0.4, 1.2),
                 dsp.harmonic_amplitudes(8, 1.0, rng, spread_db=8.0), rng.uniform(0.05, 0.4),
                 distant_hz, distant_amps, tuple(rng.uniform(0.1, 0.6, count).tolist()),
                 rng.uniform(0.05, 0.5), dsp.random_structure(rng, 3, 300, 6000, (5, 40), 0.05))


def factory_noise(plant: Plant, rng: np.random.Generator, n: int) -> np.ndarray:
    """Background noise (n,) of ``plant``, unit RMS; ``rng`` draws this clip's variation."""
    freqs = dsp.rfft_freqs(n)
    psd = dsp.tilt_psd(freqs, plant.exponent + rng.normal(0, 0.05), plant.corner_hz)
    psd = psd + plant.bump_gain * dsp.band_psd(freqs, plant.bump_hz, plant.bump_octaves)
    noise = dsp.coloured_noise(rng, n, psd * (freqs > 20))
    # swells: a passing forklift, a door, ventilation cycling
    noise *= 1.0 + np.clip(dsp.slow_walk(rng, n, rng.uniform(0.1, 0.5), rng.uniform(0.03, 0.15)),
                           -0.8, 2.0)
    hum = dsp.periodic(dsp.cycles(plant.mains_hz * (1 + rng.normal(0, 0.002)), n, rng.uniform()),
                       plant.hum_amps, rng.uniform(0, 2 * np.pi, 8), fundamental_hz=plant.mains_hz)
    total = noise + plant.hum_gain * hum / dsp.rms(hum)
    for f0, amps, gain in zip(plant.distant_hz, plant.distant_amps, plant.distant_gain,
                              strict=True):
        freq = f0 * (1 + rng.normal(0, 0.01)) * (1 + dsp.slow_walk(rng, n, 0.3, 0.005))
        tone = dsp.periodic(dsp.cycles(freq, n, rng.uniform()), amps,
                            rng.uniform(0, 2 * np.pi, amps.shape[0]), fundamental_hz=f0 * 1.05)
        swell = 1 + np.clip(dsp.slow_walk(rng, n, 0.2, 0.1), -0.9, 2)
        total += tone / dsp.rms(tone) * swell * gain * rng.lognormal(0, 0.15)
    positions = dsp.poisson_times(rng, n, plant.knock_rate_hz)
    if positions.shape[0]:
        kernel = np.fft.irfft(plant.knock.at(dsp.rfft_freqs(2048)) * np.exp(
            -1j * np.pi * dsp.rfft_freqs(2048) / dsp.SR * 64), 2048)  # a short ringing knock
        kernel = kernel * np.exp(-np.arange(2048) / 600.0)
        kernel /= np.max(np.abs(kernel))
        amps = np.asarray(rng.lognormal(0.0, 0.8, positions.shape[0])) * rng.uniform(1.0, 5.0)
        total += dsp.place(n, positions, amps, kernel)
    return total / dsp.rms(total)
