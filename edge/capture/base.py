"""What every audio source yields, and the counters it keeps.

A source is an iterator of ``AudioBlock``: 16 kHz mono float32 samples with the UTC time of
their first sample (and, for a file, the offset of that sample from the start of the file), so
the daemon treats a microphone and a replayed recording alike.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AudioBlock:
    """A run of consecutive samples from one source.

    ``samples``: (N,) float32 in [-1, 1] at 16 kHz; N may vary from block to block (a
    resampled microphone, the last block of a file). ``start_time``: UTC epoch seconds of the
    first sample. ``offset_s``: seconds from the start of the file for a file source, ``None``
    for a microphone. ``discontinuity``: audio was lost just before this block (dropped blocks,
    an input overflow, a reconnected device): a consumer must not treat it as following the
    previous block without a gap. ``repeated``: the source saw this audio repeat bit-exactly at
    its own rate, before resampling to 16 kHz (``edge.signal.RepeatCheck``: a device replaying
    its last buffer), which the resampled samples need not show.
    """

    samples: np.ndarray
    start_time: float
    offset_s: float | None = None
    discontinuity: bool = False
    repeated: bool = False

    @property
    def duration(self) -> float:
        """Seconds of audio in the block."""
        return self.samples.shape[0] / SAMPLE_RATE


@dataclass
class CaptureStats:
    """Cumulative counters of one source (read by the health metrics and the heartbeat).

    ``overflows``: PortAudio reported input overflow (the device lost samples before we got
    them). ``dropped_blocks``: our bounded queue was full, the block was thrown away (the
    consumer is too slow). ``device_errors``: opening the device failed or it vanished;
    each is retried with backoff. ``reconnects``: a stream reopened after an error.
    """

    blocks: int = 0
    samples: int = 0
    overflows: int = 0
    dropped_blocks: int = 0
    device_errors: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to counters from any thread (the audio callback included)."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int | bool | str]:
        with self._lock:
            return {"blocks": self.blocks, "samples": self.samples, "overflows": self.overflows,
                    "dropped_blocks": self.dropped_blocks, "device_errors": self.device_errors,
                    "reconnects": self.reconnects, "connected": self.connected,
                    "last_error": self.last_error}


class AudioSource(Protocol):
    """A source of ``AudioBlock``: iterate it; ``close()`` (or the stop event) ends it.

    Iteration ends when the source is exhausted (a file) or when ``stop_event`` is set; a
    microphone never ends on its own, not even when its device is lost (it retries).
    """

    name: str
    stats: CaptureStats
    stop_event: threading.Event

    def __iter__(self) -> Iterator[AudioBlock]: ...

    def close(self) -> None: ...
