"""Signal building blocks for the machine-sound generator (numpy only, vectorised).

All signals are float64 arrays of ``n`` samples at ``SAMPLE_RATE`` (16 kHz); times are seconds,
frequencies Hz, phases in cycles (1.0 = one revolution). Filtering is done in the frequency
domain over the whole signal (one FFT each way), which is what keeps a 10 s clip cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from edge.audio import SAMPLE_RATE

SR = SAMPLE_RATE
NYQUIST_MARGIN_HZ = 7800.0  # harmonics above this are dropped (no aliasing in table lookup)
_TABLE_SIZE = 4096


@lru_cache(maxsize=8)
def rfft_freqs(n: int) -> np.ndarray:
    """(n // 2 + 1,) bin frequencies (Hz) of ``np.fft.rfft`` of n samples."""
    return np.fft.rfftfreq(n, 1.0 / SR)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def coloured_noise(rng: np.random.Generator, n: int, psd: np.ndarray) -> np.ndarray:
    """Gaussian noise (n,) with power spectral density shape ``psd`` (n // 2 + 1,), unit RMS."""
    half = n // 2 + 1
    spectrum = (rng.standard_normal(half) + 1j * rng.standard_normal(half)) * np.sqrt(psd)
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    return x / rms(x)


def band_psd(freqs: np.ndarray, centre_hz: float, octaves: float) -> np.ndarray:
    """A log-normal band (peak 1 at ``centre_hz``, ``octaves`` standard deviation in octaves)."""
    log_ratio = np.log2(np.maximum(freqs, 1.0) / centre_hz)
    return np.exp(-0.5 * (log_ratio / octaves) ** 2)


def tilt_psd(freqs: np.ndarray, exponent: float, corner_hz: float = 50.0) -> np.ndarray:
    """1 / f^exponent above ``corner_hz`` (flat below): 1 is pink, 2 is brown."""
    return (np.maximum(freqs, corner_hz) / corner_hz) ** (-exponent)


@dataclass(frozen=True)
class Structure:
    """A machine's structural response: second-order resonances over a flat ``floor``.

    ``at(freqs)`` is the magnitude response, scaled so that white noise keeps its RMS through
    it (mean |H|^2 = 1 over 0-8 kHz), whatever frequencies it is evaluated at.
    """

    centres_hz: tuple[float, ...]
    qs: tuple[float, ...]
    gains: tuple[float, ...]
    floor: float = 0.1

    def raw(self, freqs: np.ndarray) -> np.ndarray:
        f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)[..., None]
        fc = np.asarray(self.centres_hz)
        peaks = np.asarray(self.gains) / np.sqrt(1.0 + (np.asarray(self.qs)
                                                         * (f / fc - fc / f)) ** 2)
        return self.floor + peaks.sum(axis=-1)

    @property
    def norm(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.raw(np.linspace(0, SR / 2, 4097))))))

    def at(self, freqs: np.ndarray) -> np.ndarray:
        return self.raw(freqs) / self.norm

    def response(self, n: int) -> np.ndarray:
        """``at(rfft_freqs(n))``, cached: a unit renders many clips of the same length."""
        return _cached_response(self, n)

    def shifted(self, factor: float) -> Structure:
        """The same structure with every resonance moved by ``factor`` (mass or stiffness)."""
        return Structure(tuple(c * factor for c in self.centres_hz), self.qs, self.gains,
                         self.floor)


@lru_cache(maxsize=64)
def _cached_response(structure: Structure, n: int) -> np.ndarray:
    response = structure.at(rfft_freqs(n))
    response.flags.writeable = False
    return response


def clear_caches() -> None:
    """Drop the cached spectra and bin frequencies (megabytes each for long renderings)."""
    _cached_response.cache_clear()
    rfft_freqs.cache_clear()


def random_structure(rng: np.random.Generator, count: int, low_hz: float, high_hz: float,
                     q_range: tuple[float, float] = (5.0, 30.0), floor: float = 0.1) -> Structure:
    """A unit's resonances: ``count`` peaks log-uniform in [low_hz, high_hz]."""
    centres = np.exp(rng.uniform(np.log(low_hz), np.log(high_hz), count))
    return Structure(tuple(centres.tolist()), tuple(rng.uniform(*q_range, count).tolist()),
                     tuple(rng.uniform(0.3, 1.0, count).tolist()), floor)


def apply_response(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Filter (n,) by the zero-phase magnitude ``response`` (n // 2 + 1,): one FFT pair."""
    return np.fft.irfft(np.fft.rfft(x) * response, x.shape[0])


def slow_walk(rng: np.random.Generator, n: int, rate_hz: float, std: float) -> np.ndarray:
    """Smooth zero-mean random fluctuation (n,): Gaussian knots every 1/rate_hz s, interpolated."""
    knots = int(n / SR * rate_hz) + 2
    values = rng.standard_normal(knots) * std
    return np.interp(np.arange(n) * (rate_hz / SR), np.arange(knots), values)


def cycles(freq_hz: float | np.ndarray, n: int, start: float = 0.0) -> np.ndarray:
    """Phase in cycles (n,) of a rotation at ``freq_hz`` (a constant or an (n,) trajectory)."""
    if np.ndim(freq_hz) == 0:
        return start + np.arange(n) * (float(freq_hz) / SR)
    return start + np.cumsum(freq_hz) / SR


def periodic(phase: np.ndarray, amplitudes: ArrayLike, phases: ArrayLike | None = None,
             fundamental_hz: float = 0.0) -> np.ndarray:
    """A periodic wave sum_k a_k cos(2 pi k phase + phi_k), k = 1..K, read from a table.

    ``fundamental_hz`` (the highest the phase reaches) drops harmonics above 7.8 kHz, so
    table lookup does not alias. Cost is O(n) whatever K.
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if fundamental_hz > 0:
        amplitudes = amplitudes[: max(1, int(NYQUIST_MARGIN_HZ // fundamental_hz))]
    if phases is None:
        phases = np.zeros(amplitudes.shape[0])
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    count = min(amplitudes.shape[0], _TABLE_SIZE // 2 - 1)
    spectrum[1:count + 1] = amplitudes[:count] * np.exp(1j * np.asarray(phases)[:count])
    table = np.fft.irfft(spectrum * (_TABLE_SIZE / 2.0), _TABLE_SIZE)
    table = np.append(table, table[0]).astype(np.float32)  # wrap-around sample for interpolation
    position = (phase - np.floor(phase)) * _TABLE_SIZE  # float64: phases grow to 1e5 cycles
    index = position.astype(np.int32)
    frac = (position - index).astype(np.float32)
    below = table[index]
    return (below + (table[index + 1] - below) * frac).astype(np.float64)


def harmonic_amplitudes(count: int, decay: float, rng: np.random.Generator,
                        spread_db: float = 4.0) -> np.ndarray:
    """(count,) amplitudes 1/k^decay, each scattered by ``spread_db`` (a unit's fingerprint)."""
    k = np.arange(1, count + 1)
    return k ** (-decay) * 10 ** (rng.normal(0.0, spread_db, count) / 20)


def shaped_harmonics(f0_hz: float, amplitudes: np.ndarray, response_at) -> np.ndarray:
    """Harmonic amplitudes weighted by a structure's response ``response_at(freqs_hz)``."""
    freqs = f0_hz * np.arange(1, amplitudes.shape[0] + 1)
    return amplitudes * response_at(freqs) * (freqs < NYQUIST_MARGIN_HZ)


def crossings(phase: np.ndarray) -> np.ndarray:
    """Sample indices where ``phase`` (cycles, increasing) passes a whole number."""
    whole = np.floor(phase)
    return np.flatnonzero(np.diff(whole) > 0) + 1


def impulses(n: int, positions: np.ndarray, amplitudes: np.ndarray | float) -> np.ndarray:
    """(n,) zeros with ``amplitudes`` added at sample ``positions`` (out-of-range ones dropped)."""
    out = np.zeros(n)
    positions = np.asarray(positions, dtype=np.int64)
    amps = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), positions.shape)
    keep = (positions >= 0) & (positions < n)
    np.add.at(out, positions[keep], amps[keep])
    return out


def poisson_times(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """Sample positions of a Poisson process of ``rate_hz`` events per second over n samples."""
    count = rng.poisson(rate_hz * n / SR)
    return np.sort(rng.integers(0, n, count))


def decay_kernel(time_constant_s: float, length_s: float | None = None) -> np.ndarray:
    """An exponential decay exp(-t / tau), for envelopes of bursts (convolved with impulses)."""
    length = int(SR * (length_s if length_s is not None else 5 * time_constant_s)) + 1
    return np.exp(-np.arange(length) / (SR * time_constant_s))


def place(n: int, positions: np.ndarray, amplitudes: np.ndarray,
          kernel: np.ndarray) -> np.ndarray:
    """(n,) with ``kernel`` added at each of a few ``positions`` (sparse: a loop is cheapest)."""
    out = np.zeros(n)
    for position, amplitude in zip(positions.tolist(), np.broadcast_to(
            amplitudes, positions.shape).tolist(), strict=True):
        stop = min(n, position + kernel.shape[0])
        if 0 <= position < n:
            out[position:stop] += amplitude * kernel[: stop - position]
    return out


def envelope_of_events(n: int, positions: np.ndarray, amplitudes: np.ndarray | float,
                       time_constant_s: float) -> np.ndarray:
    """(n,) sum of decaying envelopes starting at ``positions`` (FFT convolution)."""
    kernel = decay_kernel(time_constant_s)
    spikes = impulses(n, positions, amplitudes)
    size = n + kernel.shape[0]
    out = np.fft.irfft(np.fft.rfft(spikes, size) * np.fft.rfft(kernel, size), size)[:n]
    return np.maximum(out, 0.0)


def level(severity: float, lowest: float, highest: float) -> float:
    """Log-interpolate a fault's magnitude: severity 0 -> ``lowest``, 1 -> ``highest``."""
    return float(lowest * (highest / lowest) ** severity)
