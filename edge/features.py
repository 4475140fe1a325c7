"""The spectrogram front end, shared by training and the edge daemon (numpy only).

One set of pure functions computes the magnitude spectrogram that both training and the
daemon see, so train and serve cannot drift:

    waveform (N,) float32, 16 kHz
      -> frames: n_fft-sample Hann windows every hop_length samples, no centre padding
      -> |rfft| scaled so a full-scale sinusoid has magnitude 1
      -> linear bins in [f_min, f_max]           (n_mels is None: "log-linear")
         or an HTK mel filterbank of n_mels bands (n_mels set: "log-mel")
      -> log(max(magnitude, log_floor))          a fixed floor; no per-clip normalisation
    spectrogram (F, T) float32, T = 1 + (N - n_fft) // hop_length

Frame ``t`` covers samples ``[t * hop_length, t * hop_length + n_fft)``; with no centre padding
and no per-clip scaling, a stream cut into chunks gives the same frames as the whole clip
(``StreamingSpectrogram``). ``DEFAULT_FRONT_END`` is log-linear (n_fft 1024, hop 512,
200 Hz-8 kHz, 500 bins); ``LOG_MEL_FRONT_END`` (128 bands, the same frame grid) is what the
statistics detector uses and what ``asd-edge train`` gives the network by default, because it
scored best here (docs/FRONTEND.md, docs/RESULTS.md). A bundle records the one it uses.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.audio import SAMPLE_RATE

MAX_FFT = 2 ** 18


class FrontEnd(BaseModel):
    """Front-end parameters (torchaudio's names). Frozen; stored in checkpoints and bundles."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sample_rate: int = Field(SAMPLE_RATE, ge=8_000, le=192_000,
                             description="Hz; audio is resampled to this")
    n_fft: int = Field(1024, ge=16, le=MAX_FFT,
                       description="FFT size and window length, samples (at most 2^18: a "
                                   "long-window spectrum of 16 s)")
    hop_length: int = Field(512, ge=1, description="samples between frames")
    f_min: float = Field(200.0, ge=0.0, description="lowest frequency kept, Hz")
    f_max: float = Field(8000.0, gt=0.0, description="highest frequency kept, Hz")
    n_mels: int | None = Field(None, ge=1, le=4096,
                               description="mel bands; None for linear bins")
    log_floor: float = Field(1e-5, gt=0.0, description="magnitude floor before the log")

    @model_validator(mode="after")
    def _check(self) -> FrontEnd:
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max {self.f_max} Hz is above Nyquist ({self.sample_rate / 2} Hz)")
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min {self.f_min} Hz must be below f_max {self.f_max} Hz")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} must not exceed n_fft {self.n_fft}")
        return self

    @property
    def n_bins(self) -> int:
        """F, the number of frequency rows of the spectrogram."""
        return self.n_mels if self.n_mels else len(_linear_bins(self))

    def n_frames(self, n_samples: int) -> int:
        """T for a waveform of ``n_samples`` samples (0 when shorter than one window)."""
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop_length

    def band_edges_hz(self) -> np.ndarray:
        """(F, 2) lower and upper frequency of each row, for explanations and reports."""
        if self.n_mels:
            mel = np.linspace(_hz_to_mel(self.f_min), _hz_to_mel(self.f_max), self.n_mels + 2)
            hz = _mel_to_hz(mel)
            return np.stack([hz[:-2], hz[2:]], axis=1)
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / self.sample_rate)[_linear_bins(self)]
        half = self.sample_rate / self.n_fft / 2
        return np.stack([freqs - half, freqs + half], axis=1)


class Patching(BaseModel):
    """How a spectrogram is cut into the model's input patches (frames of the front end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_frames: int = Field(64, ge=1, le=100_000,
                              description="frames per patch (64 x 32 ms = 2.05 s)")
    patch_hop: int = Field(16, ge=1, le=100_000, description="frames between patch starts")


DEFAULT_FRONT_END = FrontEnd()
DEFAULT_PATCHING = Patching()
# The spectral-statistics detector and the DCASE autoencoder use the DCASE baseline's log-mel.
LOG_MEL_FRONT_END = FrontEnd(n_fft=1024, hop_length=512, f_min=0.0, f_max=8000.0, n_mels=128)


@lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    return window * np.float32(2.0 / window.sum())  # full-scale sinusoid -> magnitude 1


@lru_cache(maxsize=16)
def _linear_bins(front_end: FrontEnd) -> np.ndarray:
    freqs = np.fft.rfftfreq(front_end.n_fft, 1.0 / front_end.sample_rate)
    return np.flatnonzero((freqs >= front_end.f_min) & (freqs <= front_end.f_max))


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(front_end: FrontEnd) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK mel filters (torchaudio's melscale_fbanks)."""
    assert front_end.n_mels
    freqs = np.fft.rfftfreq(front_end.n_fft, 1.0 / front_end.sample_rate)
    mel = np.linspace(_hz_to_mel(front_end.f_min), _hz_to_mel(front_end.f_max),
                      front_end.n_mels + 2)
    hz = _mel_to_hz(mel)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def frame_magnitudes(waveform: np.ndarray, front_end: FrontEnd) -> np.ndarray:
    """|STFT| of ``waveform`` (N,) as (n_fft // 2 + 1, T) float32, no centre padding."""
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    n_frames = front_end.n_frames(waveform.shape[0])
    if n_frames == 0:
        return np.zeros((front_end.n_fft // 2 + 1, 0), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(waveform, front_end.n_fft)
    frames = frames[:: front_end.hop_length][:n_frames]  # (T, n_fft)
    spectrum = np.fft.rfft(frames * _window(front_end.n_fft), axis=1)
    return np.abs(spectrum).astype(np.float32).T


def spectrogram(waveform: np.ndarray, front_end: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """Log-magnitude spectrogram (F, T) float32 of a 16 kHz waveform (N,).

    F = ``front_end.n_bins``; T = ``front_end.n_frames(N)``. Natural log of the magnitude
    (linear bins or mel bands) floored at ``front_end.log_floor``.
    """
    magnitude = frame_magnitudes(waveform, front_end)
    if front_end.n_mels:
        magnitude = mel_filterbank(front_end) @ magnitude
    else:
        magnitude = magnitude[_linear_bins(front_end)]
    return np.log(np.maximum(magnitude, front_end.log_floor)).astype(np.float32)


QUIET_QUANTILE = 0.1  # the quietest tenth of a window's frames: its floor


def quiet_level_db(spec: np.ndarray) -> float:
    """Log-magnitude spectrogram (F, T) from ``spectrogram`` -> the level (dB re full scale
    magnitude, summed over rows) of its quietest frames: the ``QUIET_QUANTILE`` quantile of the
    frames' power. For a sound made of events (a valve's clicks) it is the background between
    them; for a continuous machine it is the machine's own steady level. Compare it only
    between spectrograms of one front end."""
    power = np.exp(2.0 * np.asarray(spec, dtype=np.float64)).sum(axis=0)  # (T,)
    if power.size == 0:
        raise ValueError("spectrogram has no frames")
    return float(10.0 * np.log10(max(float(np.quantile(power, QUIET_QUANTILE)), 1e-30)))


THUMBNAIL_ROWS = 64  # at most this many frequency rows in a thumbnail
THUMBNAIL_COLUMN_SECONDS = 0.25  # about this much audio per thumbnail column
# natural-log units above ln(log_floor) the 256 levels cover: up to ln 1.5 (a full-scale
# sinusoid has magnitude 1), so 0.05 per level (0.44 dB)
THUMBNAIL_SPAN = 13.0


def thumbnail_frames(front_end: FrontEnd) -> int:
    """Spectrogram frames averaged into one thumbnail column (8 at hop 512: 0.256 s)."""
    return max(1, round(THUMBNAIL_COLUMN_SECONDS * front_end.sample_rate
                        / front_end.hop_length))


def spectrogram_thumbnail(spec: np.ndarray, front_end: FrontEnd) -> np.ndarray:
    """A small picture of a log spectrogram (F, T) from ``spectrogram``: (R, C) uint8.

    Rows are averaged in equal groups to at most ``THUMBNAIL_ROWS`` (R = ceil(F / group);
    row 0 the lowest frequencies), frames in columns of ``thumbnail_frames`` (C = T // that, at
    least 1), and the level is quantised on a fixed scale, never per clip: 0 at
    ln(``log_floor``), 255 at ``THUMBNAIL_SPAN`` above it. So two thumbnails of one front end
    compare level for level (a reference beside an alarm's clip)."""
    spec = np.asarray(spec, dtype=np.float64)
    rows, frames = spec.shape
    group = -(-rows // THUMBNAIL_ROWS)
    starts = np.arange(0, rows, group)
    if frames == 0:
        return np.zeros((starts.shape[0], 1), dtype=np.uint8)
    spec = np.add.reduceat(spec, starts, axis=0) / np.diff(np.append(starts, rows))[:, None]
    per_column = min(thumbnail_frames(front_end), max(frames, 1))
    columns = max(frames // per_column, 1)
    spec = spec[:, :columns * per_column].reshape(spec.shape[0], columns, per_column).mean(2)
    floor = np.log(front_end.log_floor)
    level = np.clip((spec - floor) / THUMBNAIL_SPAN, 0.0, 1.0)
    return np.round(level * 255.0).astype(np.uint8)


def patches(spec: np.ndarray, patch_frames: int, patch_hop: int) -> np.ndarray:
    """Cut a spectrogram (F, T) into patches (P, F, patch_frames), every ``patch_hop`` frames.

    P = 1 + (T - patch_frames) // patch_hop; a clip shorter than one patch gives P = 0.
    """
    n_bins, n_frames = spec.shape
    if n_frames < patch_frames:
        return np.zeros((0, n_bins, patch_frames), dtype=spec.dtype)
    view = np.lib.stride_tricks.sliding_window_view(spec, patch_frames, axis=1)
    return np.ascontiguousarray(view[:, ::patch_hop].transpose(1, 0, 2))


class StreamingSpectrogram:
    """Spectrogram of a stream: ``push`` audio chunks, get the frames they complete.

    Concatenating the outputs of ``push`` over a stream gives exactly ``spectrogram`` of the
    concatenated audio. Holds at most ``n_fft - 1`` samples between calls.
    """

    def __init__(self, front_end: FrontEnd = DEFAULT_FRONT_END) -> None:
        self.front_end = front_end
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add (n,) samples; return the (F, t) frames they complete (t may be 0)."""
        buffer = np.concatenate([self._pending, np.asarray(chunk, dtype=np.float32)])
        n_frames = self.front_end.n_frames(buffer.shape[0])
        out = spectrogram(buffer, self.front_end)
        self._pending = buffer[n_frames * self.front_end.hop_length:]
        self.frames_emitted += n_frames
        return out

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0
