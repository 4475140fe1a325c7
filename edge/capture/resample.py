"""Streaming polyphase resampling: the same output as ``edge.audio.resample`` on the whole
signal, computed block by block.

``scipy.signal.resample_poly(x, up, down, window=h)`` with the FIR ``h`` of
``edge.audio.resampling_filter`` (length ``2 * half_len + 1``) computes, for a zero-padded
signal, ``y[m] = sum_i h[m * down + half_len - i * up] * x[i]``. Output ``m`` therefore needs
input up to index ``(m * down + half_len) // up``: this class emits every output whose inputs
have all arrived and keeps the few samples the next outputs still need, so the concatenated
output equals the offline result except for the last ~``half_len / up`` input samples, which
the offline version computes against zero padding after the end.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge.audio import resampling_filter, resampling_ratio


class StreamingResampler:
    """Resample a stream of (N,) float32 blocks from ``orig_rate`` to ``target_rate`` Hz."""

    def __init__(self, orig_rate: int, target_rate: int) -> None:
        self.up, self.down = resampling_ratio(orig_rate, target_rate)
        self.identity = self.up == self.down == 1
        if self.identity:
            return
        h = resampling_filter(self.up, self.down) * self.up  # as edge.audio.resample's
        self.half_len = (h.size - 1) // 2
        self.taps = -(-h.size // self.up)  # K, input samples per output
        padded = np.zeros(self.taps * self.up)
        padded[:h.size] = h
        self.phases = padded.reshape(self.taps, self.up).T.copy()  # (up, K): [p, k] = h[p + k up]
        self._reversed = self.phases[:, ::-1].copy()  # (up, K): dotted with inputs oldest first
        self.reset()

    def reset(self) -> None:
        """Start over (after a gap in the input): the next block begins a new signal."""
        if self.identity:
            return
        # Inputs before the first sample are zeros, as in the offline padding.
        self._buffer = np.zeros(self.taps, dtype=np.float64)
        self._buffer_start = -self.taps  # absolute input index of _buffer[0]
        self._received = 0  # input samples received
        self._next_output = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed (N,) input samples; return the (M,) float32 outputs they complete (M >= 0)."""
        block = np.asarray(block, dtype=np.float32)
        if self.identity:
            return block
        self._buffer = np.concatenate([self._buffer, block.astype(np.float64)])
        self._received += block.shape[0]
        # Largest m with (m * down + half_len) // up <= received - 1.
        last = ((self._received - 1) * self.up + self.up - 1 - self.half_len) // self.down
        if last < self._next_output:
            return np.zeros(0, dtype=np.float32)
        outputs = np.arange(self._next_output, last + 1)
        position = outputs * self.down + self.half_len
        newest = position // self.up                      # (M,) newest input index used
        phase = position - newest * self.up               # (M,)
        # Output m reads inputs newest-K+1 .. newest: row newest-K+1 of the (L-K+1, K) sliding
        # windows. Outputs m, m+up, m+2up, ... share a phase and step down rows at a time, so
        # each of the up residues is one strided view times one phase (BLAS, no gather).
        rows = newest - self._buffer_start - self.taps + 1
        windows = sliding_window_view(self._buffer, self.taps)
        values = np.empty(outputs.shape[0], dtype=np.float64)
        for first in range(min(self.up, outputs.shape[0])):
            chosen = rows[first::self.up]
            view = windows[chosen[0]:chosen[-1] + 1:self.down]
            values[first::self.up] = view @ self._reversed[phase[first]]
        self._next_output = last + 1
        # Keep what the next output still needs.
        keep_from = (self._next_output * self.down + self.half_len) // self.up - self.taps + 1
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return values.astype(np.float32)
