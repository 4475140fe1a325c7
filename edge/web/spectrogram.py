"""A clip's spectrogram as a PNG, with numpy and zlib only (matplotlib is not an edge
dependency): log power of a Hann-windowed STFT, low frequencies at the bottom, a fixed
perceptual colour ramp."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from edge.audio import read_audio

# viridis-like ramp: dark blue -> teal -> yellow (anchor colours, interpolated to 256)
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                     [253, 231, 37]], dtype=np.float64)
PALETTE = np.stack([np.interp(np.linspace(0, 4, 256), np.arange(5), _ANCHORS[:, c])
                    for c in range(3)], axis=1).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                              2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def spectrogram_png(path: Path, n_fft: int = 1024, hop: int = 256, max_width: int = 1200,
                    dynamic_range_db: float = 80.0) -> bytes:
    """The spectrogram of the audio file at ``path`` as PNG bytes (height n_fft/2)."""
    samples = read_audio(path)
    if samples.shape[0] < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.shape[0]))
    frames = 1 + (samples.shape[0] - n_fft) // hop
    stride = max(1, -(-frames // max_width))  # at most max_width columns
    starts = np.arange(0, frames, stride) * hop
    window = np.hanning(n_fft).astype(np.float32)
    blocks = np.stack([samples[s:s + n_fft] for s in starts]) * window
    power = np.abs(np.fft.rfft(blocks, axis=1))[:, 1:] ** 2  # drop DC: n_fft/2 rows
    db = 10.0 * np.log10(power + 1e-12)
    top = float(db.max())
    level = np.clip((db - (top - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    index = (level.T[::-1] * 255).astype(np.uint8)  # (freq, time), low frequencies at bottom
    return png_bytes(PALETTE[index])
