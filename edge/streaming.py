"""Streaming windows: audio in, one scoreable window every hop out, embedding only what is new.

The frame grid is fixed from the start of the stream: frame ``t`` covers samples
``[t * hop_length, t * hop_length + n_fft)`` and patch ``p`` covers frames
``[p * patch_hop, p * patch_hop + patch_frames)``. A window is the last ``window_patches``
patches; it spans the samples ``[start_sample, end_sample)`` and scoring exactly that audio
offline (``edge.scoring`` on ``read_audio(file)[start:end]``) gives the same patches, the same
frames, hence the same score to float tolerance. Every ``hop_patches`` new patches (a hop of
``hop_patches * patch_hop * hop_length`` samples, 0.512 s by default) a window is emitted.

Each new patch is embedded once (``pending`` -> the caller's batched embedder -> ``accept``), so a
hop costs one patch's inference per stream, and the daemon can batch patches of many streams
into one ONNX Runtime call. Other per-patch models (the ANP's per-patch scores) ride along the
same way: ``accept`` takes their outputs by name and the window carries the last
``window_patches`` of each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.features import FrontEnd, Patching, StreamingSpectrogram


def window_patches_for(seconds: float, front_end: FrontEnd, patching: Patching) -> int:
    """Patches in an offline clip of ``seconds`` (16 for 10 s at the defaults); at least 1."""
    frames = front_end.n_frames(int(round(seconds * front_end.sample_rate)))
    if frames < patching.patch_frames:
        return 1
    return 1 + (frames - patching.patch_frames) // patching.patch_hop


def hop_patches_for(seconds: float, front_end: FrontEnd, patching: Patching) -> int:
    """Patches per hop for a hop of about ``seconds`` (at least 1)."""
    patch_seconds = patching.patch_hop * front_end.hop_length / front_end.sample_rate
    return max(1, int(round(seconds / patch_seconds)))


def window_span_samples(window_patches: int, front_end: FrontEnd, patching: Patching) -> int:
    """Samples covered by ``window_patches`` consecutive patches."""
    frames = (window_patches - 1) * patching.patch_hop + patching.patch_frames
    return (frames - 1) * front_end.hop_length + front_end.n_fft


@dataclass
class Window:
    """A window ready to score: the last ``window_patches`` patches of a stream.

    ``section_embeddings`` (P, D_S) and ``attribute_embeddings`` (P, D_A) are per patch (None
    without a model); ``spectrogram`` (F, T) the model front end's frames of the window;
    ``extra_frames`` the frames (F_x, T) of each extra front end (e.g. the spectral-statistics
    detector's log-mel), by name; ``patch_outputs`` the per-patch outputs (P, K) of each other
    patch model (e.g. the ANP's per-partition NLL), by member name. Samples are counted from the
    start of the stream.
    """

    index: int
    start_sample: int
    end_sample: int
    section_embeddings: np.ndarray | None
    attribute_embeddings: np.ndarray | None
    spectrogram: np.ndarray
    extra_frames: dict[str, np.ndarray]
    patch_outputs: dict[str, np.ndarray] = field(default_factory=dict)


class StreamingWindows:
    """Incremental frames, patches and windows of one stream."""

    def __init__(self, front_end: FrontEnd, patching: Patching, window_patches: int,
                 hop_patches: int = 1, embeds: bool = True,
                 extra_front_ends: dict[str, FrontEnd] | None = None,
                 patch_models: Sequence[str] = ()) -> None:
        extra_front_ends = dict(extra_front_ends or {})
        for name, extra in extra_front_ends.items():
            if front_end.hop_length % extra.hop_length or extra.sample_rate != \
                    front_end.sample_rate:
                raise ValueError(f"front end {name!r}: its hop_length {extra.hop_length} must "
                                 f"divide the model front end's {front_end.hop_length} (and "
                                 "the sample rates agree), so every window starts on a frame "
                                 "of both")
        self.front_end = front_end
        self.patching = patching
        self.window_patches = window_patches
        self.hop_patches = hop_patches
        self.embeds = embeds
        self.window_frames = (window_patches - 1) * patching.patch_hop + patching.patch_frames
        self._spec = StreamingSpectrogram(front_end)
        # an extra front end equal to the model's reuses its frames instead of computing them
        self._extra = {name: StreamingSpectrogram(fe) for name, fe in extra_front_ends.items()
                       if fe != front_end}
        # frames kept from absolute frame index _first_frame on; an extra front end's from
        # _extra_first[name] on its own grid (frame t covers samples [t * hop, t * hop + n_fft))
        self._frames = np.zeros((front_end.n_bins, 0), np.float32)
        self._extra_front_ends = extra_front_ends
        self._extra_frames = {name: np.zeros((fe.n_bins, 0), np.float32)
                              for name, fe in extra_front_ends.items()}
        self._extra_first = dict.fromkeys(extra_front_ends, 0)
        self._first_frame = 0
        self._next_patch = 0  # index of the next patch to cut
        self._pending_ids: list[int] = []
        self._section: deque[np.ndarray] = deque(maxlen=window_patches)
        self._attribute: deque[np.ndarray] = deque(maxlen=window_patches)
        self._outputs: dict[str, deque[np.ndarray]] = {
            name: deque(maxlen=window_patches) for name in patch_models}
        self.windows_emitted = 0

    @property
    def frame_count(self) -> int:
        """Frames seen since the start of the stream."""
        return self._first_frame + self._frames.shape[1]

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add 16 kHz samples (n,); return the new patches to embed, (P_new, F, patch_frames).

        Call ``accept`` with their embeddings (or with ``None, None`` when ``embeds`` is
        False) and the outputs of the ``patch_models`` to get the windows they complete.
        """
        new = self._spec.push(samples)
        self._frames = np.concatenate([self._frames, new], axis=1)
        for name in self._extra_frames:
            frames = self._extra[name].push(samples) if name in self._extra else new
            self._extra_frames[name] = np.concatenate([self._extra_frames[name], frames], axis=1)
        cut = []
        hop, width = self.patching.patch_hop, self.patching.patch_frames
        while self._next_patch * hop + width <= self.frame_count:
            offset = self._next_patch * hop - self._first_frame
            cut.append(self._frames[:, offset:offset + width])
            self._pending_ids.append(self._next_patch)
            self._next_patch += 1
        if not cut:
            return np.zeros((0, self.front_end.n_bins, width), np.float32)
        return np.stack(cut).astype(np.float32)

    def accept(self, section: np.ndarray | None, attribute: np.ndarray | None,
               outputs: dict[str, np.ndarray] | None = None) -> list[Window]:
        """Take the embeddings (P_new, D) of the patches ``push`` returned, and each patch
        model's outputs (P_new, K) by name; return the new windows."""
        outputs = outputs or {}
        if set(outputs) != set(self._outputs):
            raise ValueError(f"outputs of {sorted(outputs)} given, the stream carries "
                             f"{sorted(self._outputs)}")
        ids, self._pending_ids = self._pending_ids, []
        windows = []
        for row, patch_id in enumerate(ids):
            if self.embeds:
                assert section is not None and attribute is not None
                self._section.append(section[row])
                self._attribute.append(attribute[row])
            for name, kept in self._outputs.items():
                kept.append(outputs[name][row])
            count = patch_id + 1
            if count >= self.window_patches and not (count - self.window_patches) % \
                    self.hop_patches:
                windows.append(self._window(patch_id))
        # keep only the frames that the window of the next patch still needs
        keep_from = max(0, (self._next_patch - self.window_patches + 1) * self.patching.patch_hop)
        drop = keep_from - self._first_frame
        if drop > 0:
            self._frames = self._frames[:, drop:]
            self._first_frame = keep_from
        for name, frames in self._extra_frames.items():
            first = keep_from * self.front_end.hop_length // \
                self._extra_front_ends[name].hop_length
            if first > self._extra_first[name]:
                self._extra_frames[name] = frames[:, first - self._extra_first[name]:]
                self._extra_first[name] = first
        return windows

    def _window(self, last_patch: int) -> Window:
        first_patch = last_patch - self.window_patches + 1
        first_frame = first_patch * self.patching.patch_hop
        hop = self.front_end.hop_length
        offset = first_frame - self._first_frame
        span = slice(offset, offset + self.window_frames)
        start = first_frame * hop
        end = (first_frame + self.window_frames - 1) * hop + self.front_end.n_fft
        window = Window(
            index=self.windows_emitted,
            start_sample=start,
            end_sample=end,
            section_embeddings=np.stack(self._section) if self.embeds else None,
            attribute_embeddings=np.stack(self._attribute) if self.embeds else None,
            spectrogram=self._frames[:, span].copy(),
            extra_frames={name: self._extra_span(name, start, end)
                          for name in self._extra_frames},
            patch_outputs={name: np.stack(kept) for name, kept in self._outputs.items()})
        self.windows_emitted += 1
        return window

    def _extra_span(self, name: str, start: int, end: int) -> np.ndarray:
        """The frames of extra front end ``name`` that lie within samples [start, end): those
        an offline spectrogram of exactly that audio has."""
        extra = self._extra_front_ends[name]
        first = start // extra.hop_length - self._extra_first[name]
        count = extra.n_frames(end - start)
        return self._extra_frames[name][:, first:first + count].copy()
