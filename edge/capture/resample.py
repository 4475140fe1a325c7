"""Streaming polyphase resampling: the same output as ``edge.audio.resample`` on the whole
signal, computed block by block.

``scipy.signal.resample_poly(x, up, down)`` with its default Kaiser (beta 5) FIR ``h`` of
length ``2 * half_len + 1`` (``half_len = 10 * max(up, down)``) computes, for a zero-padded
signal, ``y[m] = sum_i h[m * down + half_len - i * up] * x[i]``. Output ``m`` therefore needs
input up to index ``(m * down + half_len) // up``: this class emits every output whose inputs
have all arrived and keeps the few samples the next outputs still need, so the concatenated
output equals the offline result except for the last ~``half_len / up`` input samples, which
the offline version computes against zero padding after the end.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import firwin


class StreamingResampler:
    """Resample a stream of (N,) float32 blocks from ``orig_rate`` to ``target_rate`` Hz."""

    def __init__(self, orig_rate: int, target_rate: int) -> None:
        common = gcd(int(orig_rate), int(target_rate))
        self.up = int(target_rate) // common
        self.down = int(orig_rate) // common
        self.identity = self.up == self.down == 1
        if self.identity:
            return
        # The filter resample_poly designs by default (scipy.signal._upfirdn / _signaltools).
        self.half_len = 10 * max(self.up, self.down)
        max_rate = max(self.up, self.down)
        h = firwin(2 * self.half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        self.taps = -(-h.size // self.up)  # K, input samples per output
        padded = np.zeros(self.taps * self.up)
        padded[:h.size] = h
        self.phases = padded.reshape(self.taps, self.up).T.copy()  # (up, K): [p, k] = h[p + k up]
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
        index = newest[:, None] - np.arange(self.taps)[None, :] - self._buffer_start  # (M, K)
        values = np.einsum("mk,mk->m", self.phases[phase], self._buffer[index])
        self._next_output = last + 1
        # Keep what the next output still needs.
        keep_from = (self._next_output * self.down + self.half_len) // self.up - self.taps + 1
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return values.astype(np.float32)
