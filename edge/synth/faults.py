"""Fault signatures shared by the machine models.

A ``Fault`` names its kind and a severity in [0, 1] (0 barely there, 1 obvious) and carries its
own random generator, so rendering a unit with and without the fault draws the same normal
sound (the stream generator cross-fades the two). Each function returns an excitation or a
signal (n,) at 16 kHz; the machine model decides where it enters (before the structure's
resonances for impacts, after it for airborne sounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.synth import dsp


@dataclass
class Fault:
    """A fault to render: ``kind`` (machine specific), ``severity`` in [0, 1], its own rng."""

    kind: str
    severity: float
    rng: np.random.Generator

    def level(self, lowest: float, highest: float) -> float:
        return dsp.level(self.severity, lowest, highest)


def periodic_impacts(phase: np.ndarray, amplitude: float, rng: np.random.Generator,
                     jitter_s: float = 0.0005, spread: float = 0.2,
                     offset: float = 0.0) -> np.ndarray:
    """Impacts once per cycle of ``phase`` (e.g. a chipped tooth each revolution).

    ``offset`` (cycles) places the impact within the revolution; ``spread`` scatters the
    amplitudes (relative), ``jitter_s`` the instants (slip of rolling elements).
    """
    positions = dsp.crossings(phase + offset)
    jitter = np.rint(rng.normal(0.0, jitter_s * dsp.SR, positions.shape[0])).astype(np.int64)
    amps = amplitude * np.clip(1 + rng.normal(0.0, spread, positions.shape[0]), 0.1, None)
    return dsp.impulses(phase.shape[0], positions + jitter, amps)


def bearing_defect(defect_phase: np.ndarray, modulation: np.ndarray, amplitude: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Impulse train at the defect frequency, amplitude-modulated (inner race: by the shaft
    angle through the load zone; ball: by the cage), with 1-2 % slip of the rolling elements."""
    positions = dsp.crossings(defect_phase)
    spacing = np.diff(positions, prepend=0).mean() if positions.shape[0] else 0.0
    slip = np.rint(rng.normal(0.0, 0.015 * spacing, positions.shape[0])).astype(np.int64)
    positions = np.clip(positions + slip, 0, defect_phase.shape[0] - 1)
    amps = amplitude * modulation[positions] * np.clip(
        1 + rng.normal(0.0, 0.25, positions.shape[0]), 0.1, None)
    return dsp.impulses(defect_phase.shape[0], positions, amps)


def squeal(n: int, rng: np.random.Generator, amplitude: float, low_hz: float = 1200.0,
           high_hz: float = 5000.0, gate_rate_hz: float = 2.0,
           gate: np.ndarray | None = None) -> np.ndarray:
    """Friction squeal: a wavering tone (with a few harmonics) that comes and goes.

    ``gate`` (n,) in [0, 1] forces when it may sound (e.g. only while sliding); otherwise it
    sounds in random episodes about ``gate_rate_hz`` per second.
    """
    f0 = rng.uniform(low_hz, high_hz)
    freq = f0 * (1 + dsp.slow_walk(rng, n, 8.0, 0.01))
    tone = dsp.periodic(dsp.cycles(freq, n, rng.uniform()), np.array([1.0, 0.35, 0.15]),
                        rng.uniform(0, 2 * np.pi, 3), fundamental_hz=f0 * 1.05)
    episodes = dsp.slow_walk(rng, n, gate_rate_hz * 2, 1.0) > rng.uniform(0.0, 0.8)
    envelope = np.convolve(episodes.astype(np.float64), np.ones(160) / 160, mode="same")
    if gate is not None:
        envelope = envelope * gate
    return amplitude * tone * envelope


def rattle(n: int, rng: np.random.Generator, amplitude: float, rate_hz: float,
           gate: np.ndarray | None = None) -> np.ndarray:
    """A loose part: random knocks at about ``rate_hz``, in clusters (bounces)."""
    positions = dsp.poisson_times(rng, n, rate_hz)
    bounces = positions + rng.integers(40, 400, positions.shape[0])
    all_positions = np.concatenate([positions, bounces])
    amps = amplitude * np.concatenate([rng.uniform(0.5, 1.0, positions.shape[0]),
                                       rng.uniform(0.1, 0.5, positions.shape[0])])
    excitation = dsp.impulses(n, all_positions, amps)
    return excitation if gate is None else excitation * gate


def hiss(n: int, rng: np.random.Generator, amplitude: float, centre_hz: float,
         octaves: float = 0.8) -> np.ndarray:
    """Broadband hiss (a leak, turbulence, a dry contact): band noise of RMS ``amplitude``."""
    psd = dsp.band_psd(dsp.rfft_freqs(n), centre_hz, octaves)
    return amplitude * dsp.coloured_noise(rng, n, psd)


def amplitude_modulation(phase: np.ndarray, depth: float, harmonics: int = 2,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """(n,) gain 1 + depth * (periodic wave of ``phase``): imbalance, bent shaft, eccentricity."""
    amps = 1.0 / np.arange(1, harmonics + 1)
    phases = rng.uniform(0, 2 * np.pi, harmonics) if rng is not None else None
    wave = dsp.periodic(phase, amps, phases)
    return 1.0 + depth * wave / max(np.max(np.abs(wave)), 1e-9)
