"""Audio files in, 16 kHz mono float32 out.

Everything inside the system runs at ``SAMPLE_RATE`` (16 kHz) mono. Files at a higher rate are
resampled with a polyphase filter (``resampling_filter``: flat to 7.85 kHz, so the same sound
recorded at 48 kHz scores as it does at 16 kHz); a multichannel file gives one chosen channel.
A rate below 16 kHz is refused: the front end reads up to 8 kHz, which such a file cannot hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from edge.errors import BadInput

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SILENCE_PEAK = 1e-4  # below about -80 dBFS peak, a clip is treated as silent


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says: rate (Hz), frames, channels, duration (s), format."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | Path) -> AudioInfo:
    """Read a file's header only. Raises ``BadInput`` naming the file if it is unreadable."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise BadInput(f"{path}: cannot read audio ({_short(err)}); "
                       "replace it with a valid WAV or FLAC file or remove it") from err
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels),
                     str(info.subtype))


MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces record at
MAX_RATIO_TERM = 1000  # up and down of a resampling ratio, at most (see resampling_ratio)


def resampling_ratio(orig_rate: int, target_rate: int) -> tuple[int, int]:
    """(up, down): ``target_rate / orig_rate`` as a fraction of terms at most 1000.

    Exact for every rate a sound card records (44.1 kHz -> 16 kHz is 160/441); an odd rate
    (e.g. 143,444 Hz, 4000/35861 exactly) gets the nearest fraction with terms up to 1000,
    a pitch error below 1e-4 relative, where the exact ratio would ask for a filter of millions
    of taps (seconds per second of audio)."""
    common = gcd(int(orig_rate), int(target_rate))
    up, down = int(target_rate) // common, int(orig_rate) // common
    if max(up, down) <= MAX_RATIO_TERM:
        return up, down
    best = Fraction(int(target_rate), int(orig_rate))
    limit = MAX_RATIO_TERM
    while True:
        ratio = best.limit_denominator(limit)
        if max(ratio.numerator, ratio.denominator) <= MAX_RATIO_TERM:
            return ratio.numerator, ratio.denominator
        limit = max(1, limit * MAX_RATIO_TERM // ratio.numerator)


FILTER_HALF_LENGTH = 256  # taps each side, per unit of max(up, down)
FILTER_BETA = 8.0  # Kaiser window


def resampling_filter(up: int, down: int) -> np.ndarray:
    """(2 * 256 * max(up, down) + 1,) the anti-aliasing FIR of a resampling by ``up / down``
    (unit gain: ``resample_poly`` multiplies by ``up``).

    scipy's default (10 taps a side per unit, Kaiser 5) loses 0.25 dB at 7 kHz, 2 dB at 7.5
    and 4 dB at 7.8 kHz: the top bands of a 48 kHz recording came out quieter than the same
    sound recorded at 16 kHz, and the spectral statistics scored it 1.3 sd higher (median over
    hops; issue 13, item 6). This one (256 taps a side per unit) changes the log spectrum by
    less than 0.001 below 7.85 kHz; only the last 1 % of the band, where every anti-aliasing
    filter (an ADC's too) rolls off, differs. Its delay in a stream is 16 ms; its cost about
    25 ms of one core per second of 48 kHz audio. The same filter serves files (``resample``)
    and microphones (``edge.capture.resample.StreamingResampler``).
    """
    widest = max(int(up), int(down))
    half_len = FILTER_HALF_LENGTH * widest
    return firwin(2 * half_len + 1, 1.0 / widest, window=("kaiser", FILTER_BETA))


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of ``waveform`` (N,) from ``orig_rate`` to ``target_rate`` Hz
    (``resampling_filter``; the output is centred: no delay)."""
    if orig_rate == target_rate:
        return waveform
    up, down = resampling_ratio(orig_rate, target_rate)
    out = resample_poly(waveform, up, down, window=resampling_filter(up, down))
    return out.astype(np.float32, copy=False)


def to_mono(data: np.ndarray, channel: int, where: str) -> np.ndarray:
    """Pick ``channel`` from (N,) or (N, C) audio; raises ``BadInput`` when it does not exist."""
    if data.ndim == 1:
        if channel != 0:
            raise BadInput(f"{where}: channel {channel} asked for, but the audio is mono; "
                           "use channel 0")
        return data
    if not 0 <= channel < data.shape[1]:
        raise BadInput(f"{where}: channel {channel} asked for, but the audio has "
                       f"{data.shape[1]} channel(s); pick 0..{data.shape[1] - 1}")
    return np.ascontiguousarray(data[:, channel])


def check_rate(rate: int, where: str) -> None:
    if rate > MAX_SAMPLE_RATE:
        raise BadInput(f"{where}: sample rate {rate} Hz is above {MAX_SAMPLE_RATE} Hz, which "
                       "no audio interface records at (a damaged header?); re-record or "
                       "re-encode the file")
    if rate < SAMPLE_RATE:
        raise BadInput(f"{where}: sample rate {rate} Hz is below {SAMPLE_RATE} Hz; the front "
                       f"end needs content up to {SAMPLE_RATE // 2} Hz: record at "
                       f"{SAMPLE_RATE} Hz or more")


def read_audio(path: str | Path, channel: int = 0) -> np.ndarray:
    """Read a WAV/FLAC file as 16 kHz mono float32 in [-1, 1], shape (N,).

    Raises ``BadInput`` (naming the file and the fix) for an unreadable or empty file, a rate
    below 16 kHz, or a channel the file does not have. A silent file only logs a warning.
    """
    path = Path(path)
    info = audio_info(path)
    if info.frames == 0:
        raise BadInput(f"{path}: the file holds no audio (0 samples); re-record it or remove it")
    check_rate(info.sample_rate, str(path))
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise BadInput(f"{path}: cannot decode audio ({_short(err)}); "
                       "replace it with a valid WAV or FLAC file or remove it") from err
    waveform = to_mono(np.asarray(data, dtype=np.float32), channel, str(path))
    if waveform.size == 0:
        raise BadInput(f"{path}: the file holds no audio (0 samples); re-record it or remove it")
    if float(np.max(np.abs(waveform))) < SILENCE_PEAK:
        logger.warning("%s: the audio is silent (peak below %.0e); check the microphone",
                       path, SILENCE_PEAK)
    return resample(waveform, int(rate), SAMPLE_RATE)


def write_audio(path: str | Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write (N,) float audio in [-1, 1] as 16-bit PCM WAV, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(waveform, -1.0, 1.0), sample_rate, subtype="PCM_16")


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
