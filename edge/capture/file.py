"""A recording replayed as a stream: ``--file x.wav`` at ``--speed realtime`` or ``max``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from edge.audio import SAMPLE_RATE, audio_info, check_rate, to_mono
from edge.capture.base import AudioBlock, CaptureStats
from edge.capture.resample import StreamingResampler
from edge.errors import BadInput

READ_SECONDS = 1.0  # audio decoded from the file at a time

logger = logging.getLogger(__name__)

Speed = Literal["realtime", "max"]


class FileSource:
    """Blocks of ``block_seconds`` from a WAV/FLAC file, 16 kHz mono (resampled, one channel).

    ``speed="realtime"`` paces the blocks like a microphone (a block is yielded when the wall
    clock reaches its end); ``"max"`` yields them as fast as they are consumed. Block
    ``offset_s`` is the block's start in seconds from the start of the file; ``start_time`` is
    the wall-clock time the replay started plus that offset. The file's header is checked on
    construction, so a bad path is a ``BadInput`` before anything runs; the audio is decoded a
    second at a time and resampled as a stream (``StreamingResampler``, the same output as
    ``edge.audio.read_audio``), so a long recording is never held in memory whole.
    """

    def __init__(self, path: str | Path, speed: Speed = "realtime", block_seconds: float = 0.1,
                 channel: int = 0, stop_event: threading.Event | None = None) -> None:
        if speed not in ("realtime", "max"):
            raise BadInput(f"speed {speed!r} is not known; use 'realtime' or 'max'")
        if block_seconds <= 0:
            raise BadInput(f"block_seconds {block_seconds} must be above 0")
        self.path = Path(path)
        self.name = f"file:{self.path.name}"
        self.speed = speed
        self.block_samples = max(1, round(block_seconds * SAMPLE_RATE))
        info = audio_info(self.path)
        if info.frames == 0:
            raise BadInput(f"{self.path}: the file holds no audio (0 samples); re-record it or "
                           "remove it")
        check_rate(info.sample_rate, str(self.path))
        to_mono(np.zeros((1, info.channels), np.float32), channel, str(self.path))  # exists?
        self.info, self.channel = info, channel
        self.stats = CaptureStats(connected=True)
        self.stop_event = stop_event or threading.Event()

    @property
    def duration(self) -> float:
        """Seconds of audio in the file."""
        return self.info.duration

    def _samples(self) -> Iterator[np.ndarray]:
        """The file as 16 kHz mono float32 pieces, in order (``read_audio``'s samples)."""
        rate = self.info.sample_rate
        resampler = StreamingResampler(rate, SAMPLE_RATE)
        wanted = -(-self.info.frames * resampler.up // resampler.down)  # offline length
        given = 0
        try:
            with sf.SoundFile(str(self.path)) as handle:
                for data in handle.blocks(blocksize=max(1, int(READ_SECONDS * rate)),
                                          dtype="float32", always_2d=True):
                    piece = resampler.process(to_mono(data, self.channel, str(self.path)))
                    given += piece.shape[0]
                    yield piece
        except (RuntimeError, OSError, sf.LibsndfileError) as err:
            raise BadInput(f"{self.path}: cannot decode audio ({err}); replace it with a valid "
                           "WAV or FLAC file") from err
        if not resampler.identity and given < wanted:  # the tail, against zero padding
            tail = resampler.process(np.zeros(resampler.taps + 1, np.float32))
            yield tail[:wanted - given]

    def _blocks(self) -> Iterator[np.ndarray]:
        """``_samples`` cut into blocks of ``block_samples`` (the last one shorter)."""
        pending: list[np.ndarray] = []
        held = 0
        for piece in self._samples():
            pending.append(piece)
            held += piece.shape[0]
            if held < self.block_samples:
                continue
            joined = np.concatenate(pending)
            cut = joined.shape[0] - joined.shape[0] % self.block_samples
            for begin in range(0, cut, self.block_samples):
                yield joined[begin:begin + self.block_samples]
            pending, held = [joined[cut:]], joined.shape[0] - cut
        if held:
            yield np.concatenate(pending)

    def __iter__(self) -> Iterator[AudioBlock]:
        started = time.time()
        clock_start = time.monotonic()
        begin = 0
        for samples in self._blocks():
            end = begin + samples.shape[0]
            if self.speed == "realtime":
                # Wait until the block's last sample "has been recorded".
                delay = clock_start + end / SAMPLE_RATE - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    return
            if self.stop_event.is_set():
                return
            offset = begin / SAMPLE_RATE
            self.stats.add(blocks=1, samples=end - begin)
            yield AudioBlock(samples, started + offset, offset_s=offset)
            begin = end
        logger.info("%s: end of file after %.1f s of audio", self.path, begin / SAMPLE_RATE)

    def close(self) -> None:
        self.stop_event.set()
