"""Training data: label maps, the validation hold-out, the spectrogram cache, sampling.

Labels. A section label names the machine type too (``fan/section_00``), so one classifier
spans every machine type of a run. An attribute key is scoped by machine type
(``fan/m-n``): the same key name means different things on different machines. A clip's
label for a key its section does not have is ``IGNORE`` (masked in the loss).

Cache. The front end runs once per clip: every clip's spectrogram is stored transposed,
(T_i, F) float32, one after the other in one memory-mapped ``.npy`` (plus the frame offsets),
named by a hash of the front-end parameters and the file list (path, size, mtime). A patch
is then a slice of consecutive rows, so an epoch reads the disk cache and never redoes the STFT.

Sampling (the target-domain imbalance). DCASE gives ~990 source and 10 target clips per
section. Each epoch draws as many clips as there are (with replacement), clip i with
probability proportional to ``n_g ** -balance``, where n_g is the size of its (machine,
section, domain) group. ``balance`` 0 is the natural frequency, 1 gives each domain of each
section the same share; the default 0.5 lifts the target domain from 1 % to ~9 % of the
draws at DCASE's sizes without repeating each target clip a hundred times per epoch. Each
draw takes a random patch of the clip (any frame offset), so the target clips' repeats differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, audio_info, read_audio
from edge.dataset import Clip
from edge.errors import BadInput
from edge.features import FrontEnd, patches, spectrogram

logger = logging.getLogger(__name__)

IGNORE = -100  # same value as training.losses.IGNORE (this module does not import torch)


def section_label(clip: Clip) -> str:
    return f"{clip.machine}/{clip.section_name}"


def attribute_key(machine: str, key: str) -> str:
    return f"{machine}/{key}"


@dataclass
class LabelMaps:
    """Class lists of the section classifier and of each attribute classifier."""

    section_labels: list[str]                  # e.g. ["fan/section_00", "gearbox/section_00"]
    attribute_labels: dict[str, list[str]]     # e.g. {"fan/speed": ["1000", "1200"]}

    @property
    def attribute_keys(self) -> list[str]:
        return list(self.attribute_labels)

    @classmethod
    def from_clips(cls, clips: list[Clip]) -> LabelMaps:
        sections = sorted({section_label(c) for c in clips})
        values: dict[str, set[str]] = defaultdict(set)
        for clip in clips:
            for key, value in clip.attributes:
                values[attribute_key(clip.machine, key)].add(value)
        return cls(sections, {k: sorted(v) for k, v in sorted(values.items())})

    def encode(self, clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
        """Section labels (N,) int64 and attribute labels (N, K) int64 (``IGNORE`` if absent)."""
        section_index = {label: i for i, label in enumerate(self.section_labels)}
        keys = self.attribute_keys
        value_index = [{v: i for i, v in enumerate(self.attribute_labels[k])} for k in keys]
        sections = np.array([section_index[section_label(c)] for c in clips], dtype=np.int64)
        attributes = np.full((len(clips), len(keys)), IGNORE, dtype=np.int64)
        key_index = {k: i for i, k in enumerate(keys)}
        for row, clip in enumerate(clips):
            for key, value in clip.attributes:
                k = key_index.get(attribute_key(clip.machine, key))
                if k is not None and value in value_index[k]:
                    attributes[row, k] = value_index[k][value]
        return sections, attributes


def group_of(clip: Clip) -> tuple[str, int, str]:
    return clip.machine, clip.section, clip.domain or "source"


def split_validation(clips: list[Clip], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out ``fraction`` of each (machine, section, domain) group with >= 5 clips.

    Returns (train indices, validation indices) into ``clips``; deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, clip in enumerate(clips):
        groups[group_of(clip)].append(i)
    validation: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        if fraction <= 0 or len(members) < 5:
            continue
        n_val = max(1, int(round(fraction * len(members))))
        validation += [members[i] for i in rng.permutation(len(members))[:n_val]]
    held = set(validation)
    return [i for i in range(len(clips)) if i not in held], sorted(validation)


def sampling_weights(clips: list[Clip], balance: float) -> np.ndarray:
    """(N,) float64 draw probabilities: n_group ** -balance, normalised (see module doc)."""
    counts = Counter(group_of(c) for c in clips)
    weights = np.array([counts[group_of(c)] ** -balance for c in clips], dtype=np.float64)
    return weights / weights.sum()


def clip_samples(clip: Clip) -> int:
    """A clip's length in samples at 16 kHz (from the header; read only when resampled)."""
    info = audio_info(clip.path)
    if info.sample_rate == SAMPLE_RATE:
        return info.frames
    return int(read_audio(clip.path).shape[0])  # resampled length; rare, so read it


def cache_key(clips: list[Clip], front_end: FrontEnd) -> str:
    """sha256 over the front-end parameters and each file's resolved path, size and mtime."""
    digest = hashlib.sha256(front_end.model_dump_json().encode())
    for clip in clips:
        stat = clip.path.stat()
        digest.update(f"{clip.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class SpectrogramCache:
    """Read side of the cache: ``frames`` (sum T_i, F) float32 memmap, ``offsets`` (N + 1,)."""

    def __init__(self, frames: np.ndarray, offsets: np.ndarray) -> None:
        self.frames = frames
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def n_frames(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def clip(self, i: int) -> np.ndarray:
        """Spectrogram of clip ``i`` as (T_i, F) (a view of the memmap)."""
        return self.frames[self.offsets[i]:self.offsets[i + 1]]

    def random_patches(self, indices: np.ndarray, patch_frames: int,
                       rng: np.random.Generator) -> np.ndarray:
        """One patch at a random frame offset per clip index: (B, F, patch_frames) float32."""
        out = np.empty((len(indices), self.frames.shape[1], patch_frames), dtype=np.float32)
        for row, i in enumerate(indices):
            start = int(self.offsets[i]) + int(rng.integers(0, self.n_frames(i) - patch_frames + 1))
            out[row] = self.frames[start:start + patch_frames].T
        return out

    def clip_patches(self, i: int, patch_frames: int, patch_hop: int,
                     max_patches: int | None = None) -> np.ndarray:
        """The clip's patches as the edge cuts them (edge.features.patches): (P, F, T)."""
        cut = patches(self.clip(i).T, patch_frames, patch_hop)
        if max_patches and len(cut) > max_patches:
            cut = cut[np.linspace(0, len(cut) - 1, max_patches).round().astype(int)]
        return np.ascontiguousarray(cut, dtype=np.float32)

    def frequency_statistics(self, indices: list[int],
                             transform: Callable[[np.ndarray], np.ndarray] | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Per-frequency mean and standard deviation (F,) over every frame of those clips;
        of ``transform`` (T, F) -> (T, F') of each clip's frames when given."""
        transform = transform or (lambda block: block)
        n_bins = transform(np.zeros((1, self.frames.shape[1]))).shape[1]
        total, total_sq, count = np.zeros(n_bins), np.zeros(n_bins), 0
        for i in indices:
            block = transform(np.asarray(self.clip(i), dtype=np.float64))
            total += block.sum(axis=0)
            total_sq += (block ** 2).sum(axis=0)
            count += block.shape[0]
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
        return mean.astype(np.float32), std.astype(np.float32)


def cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"spec-{key[:24]}.frames.npy", cache_dir / f"spec-{key[:24]}.offsets.npy"


def build_cache(clips: list[Clip], front_end: FrontEnd, cache_dir: Path,
                progress: bool = False) -> SpectrogramCache:
    """Compute (or reuse) the spectrograms of ``clips``; returns the opened cache.

    Written to temporary names and renamed when complete, so an interrupted build is redone.
    """
    cache_dir = Path(cache_dir)
    key = cache_key(clips, front_end)
    frames_path, offsets_path = cache_paths(cache_dir, key)
    if frames_path.exists() and offsets_path.exists():
        logger.info("spectrogram cache hit: %s", frames_path)
        return open_cache(cache_dir, key)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"{cache_dir}: cannot create the spectrogram cache folder ({err}); "
                       "pass a writable --cache-dir") from err
    lengths = [front_end.n_frames(clip_samples(c)) for c in clips]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tmp_frames = frames_path.with_suffix(f".tmp{os.getpid()}.npy")
    frames = np.lib.format.open_memmap(tmp_frames, mode="w+", dtype=np.float32,
                                       shape=(int(offsets[-1]), front_end.n_bins))
    iterator = clips
    if progress:
        from tqdm import tqdm
        iterator = tqdm(clips, desc="spectrograms", unit="clip")
    for i, clip in enumerate(iterator):
        spec = spectrogram(read_audio(clip.path), front_end)  # (F, T_i)
        frames[offsets[i]:offsets[i + 1]] = spec.T
    frames.flush()
    del frames
    tmp_offsets = offsets_path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp_offsets, offsets)
    os.replace(tmp_offsets, offsets_path)
    os.replace(tmp_frames, frames_path)
    (cache_dir / f"spec-{key[:24]}.json").write_text(json.dumps(
        {"front_end": front_end.model_dump(), "clips": [str(c.path) for c in clips]}))
    logger.info("spectrogram cache written: %s (%d clips, %.1f MB)", frames_path, len(clips),
                frames_path.stat().st_size / 1e6)
    return open_cache(cache_dir, key)


def open_cache(cache_dir: Path, key: str) -> SpectrogramCache:
    frames_path, offsets_path = cache_paths(Path(cache_dir), key)
    frames = np.load(frames_path, mmap_mode="r", allow_pickle=False)
    offsets = np.load(offsets_path, allow_pickle=False)
    return SpectrogramCache(frames, offsets)
