"""A clip's spectrogram as a PNG, with numpy and zlib only (matplotlib is not an edge
dependency): log power of a Hann-windowed STFT, low frequencies at the bottom, a fixed
perceptual colour ramp. And an alarm's clip beside its nearest normal reference: both as the
bundle's thumbnails (``edge.features.spectrogram_thumbnail``: the model's front end, 64 rows,
0.25 s columns), the reference's stored in the bundle, drawn on one colour scale."""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import read_audio
from edge.bundle.fit import load_thumbnails
from edge.bundle.load import Bundle
from edge.features import FrontEnd, spectrogram, spectrogram_thumbnail

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


# thumbnails (``edge.features.spectrogram_thumbnail``) are drawn this many pixels a cell
THUMBNAIL_SCALE = (3, 8)  # (rows, columns): 64 rows -> 192 px, 0.256 s columns -> 31 px/s


@dataclass(frozen=True)
class ReferencePicture:
    """The nearest normal reference of an alarm, as the episode page shows it: its manifest
    entry and its thumbnail, or ``reason`` why there is none to show."""

    reference: dict[str, Any] | None
    thumbnail: np.ndarray | None
    reason: str = ""


_thumbnails: dict[str, tuple[Bundle, list[np.ndarray | None]]] = {}
_thumbnails_lock = threading.Lock()


def nearest_reference(bundle: Bundle | None, explanation: dict[str, Any], section: int
                      ) -> ReferencePicture:
    """The reference ``explanation["nearest"]`` names, looked up by file and section in the
    bundle the daemon runs now, with its stored thumbnail."""
    nearest = explanation.get("nearest")
    if not isinstance(nearest, dict) or not nearest.get("file"):
        return ReferencePicture(None, None, "the explanation names no nearest normal reference "
                                            "(its scorer is not a nearest-neighbour search)")
    if bundle is None:
        return ReferencePicture(nearest, None, "this run has no bundle of the machine loaded")
    references = bundle.manifest.references
    rows = [row for row, r in enumerate(references)
            if r.file == nearest["file"] and r.section == section]
    if not rows:
        return ReferencePicture(nearest, None, "the reference is no longer in the bundle "
                                               "(it was exported or enrolled anew)")
    with _thumbnails_lock:
        cached = _thumbnails.get(bundle.machine)
        if cached is None or cached[0] is not bundle:
            cached = (bundle, load_thumbnails(bundle.path, len(references)))
            _thumbnails[bundle.machine] = cached
    thumbnail = cached[1][rows[0]]
    if thumbnail is None:
        return ReferencePicture(nearest, None, "the bundle keeps no spectrogram of its "
                                               "references (written by an older asd-edge: "
                                               "export or enroll again to add them)")
    return ReferencePicture(references[rows[0]].model_dump(mode="json"), thumbnail)


def clip_thumbnail(path: Path, front_end: FrontEnd) -> np.ndarray:
    """The audio file at ``path`` as the bundle's thumbnails show a reference."""
    return spectrogram_thumbnail(spectrogram(read_audio(path), front_end), front_end)


def thumbnails_png(*thumbnails: np.ndarray) -> list[bytes]:
    """PNGs of thumbnails on one shared colour scale (their joint 1st to 99.9th percentile
    level), low frequencies at the bottom, each cell ``THUMBNAIL_SCALE`` pixels."""
    levels = np.concatenate([t.ravel() for t in thumbnails]).astype(np.float64)
    low, high = np.percentile(levels, [1.0, 99.9])
    high = max(high, low + 1.0)
    out = []
    for thumbnail in thumbnails:
        level = np.clip((thumbnail.astype(np.float64) - low) / (high - low), 0.0, 1.0)
        index = (level[::-1] * 255).astype(np.uint8)
        index = np.repeat(np.repeat(index, THUMBNAIL_SCALE[0], 0), THUMBNAIL_SCALE[1], 1)
        out.append(png_bytes(PALETTE[index]))
    return out
