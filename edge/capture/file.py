"""A recording replayed as a stream: ``--file x.wav`` at ``--speed realtime`` or ``max``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from edge.audio import SAMPLE_RATE, read_audio
from edge.capture.base import AudioBlock, CaptureStats
from edge.errors import BadInput

logger = logging.getLogger(__name__)

Speed = Literal["realtime", "max"]


class FileSource:
    """Blocks of ``block_seconds`` from a WAV/FLAC file, 16 kHz mono (resampled, one channel).

    ``speed="realtime"`` paces the blocks like a microphone (a block is yielded when the wall
    clock reaches its end); ``"max"`` yields them as fast as they are consumed. Block
    ``offset_s`` is the block's start in seconds from the start of the file; ``start_time`` is
    the wall-clock time the replay started plus that offset. The file is read (and checked) on
    construction, so a bad path is a ``BadInput`` before anything runs.
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
        self.waveform = read_audio(self.path, channel=channel)  # (N,) float32, 16 kHz
        self.stats = CaptureStats(connected=True)
        self.stop_event = stop_event or threading.Event()

    @property
    def duration(self) -> float:
        """Seconds of audio in the file (after resampling)."""
        return self.waveform.shape[0] / SAMPLE_RATE

    def __iter__(self) -> Iterator[AudioBlock]:
        started = time.time()
        clock_start = time.monotonic()
        total = self.waveform.shape[0]
        for begin in range(0, total, self.block_samples):
            end = min(begin + self.block_samples, total)
            if self.speed == "realtime":
                # Wait until the block's last sample "has been recorded".
                delay = clock_start + end / SAMPLE_RATE - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    return
            if self.stop_event.is_set():
                return
            offset = begin / SAMPLE_RATE
            self.stats.add(blocks=1, samples=end - begin)
            yield AudioBlock(self.waveform[begin:end], started + offset, offset_s=offset)
        logger.info("%s: end of file after %.1f s of audio", self.path, total / SAMPLE_RATE)

    def close(self) -> None:
        self.stop_event.set()
