"""Evidence: the audio of each alarm saved as a WAV clip, with the sound that led up to it.

Each stream keeps its last ``pre_roll_seconds`` (plus ``lag_seconds``) of audio in a
``RingBuffer``. On an alarm, ``EvidenceRecorder.trigger`` returns the clip's path at once (the
event names it) and the clip is written, atomically (a temporary file renamed), when
``post_roll_seconds`` more audio has arrived, or with what there is when the stream stops.
The clip is anchored to the window that raised the alarm (``end_sample``): its pre-roll ends
where that window ends, whatever audio has been fed since while scoring caught up (a replay at
full speed, a box whose inference lags), so the same alarm always has the same clip. Clip
names carry machine, section, UTC time and episode id::

    <machine>_section_<SS>_<YYYYmmddTHHMMSSZ>_<episode id>.wav     16 kHz mono, 16-bit PCM

Retention (``enforce_retention``): after each clip, the oldest clips of the folder are removed
until at most ``max_clips`` remain, none older than ``max_age_days`` and all together at most
``max_megabytes``. Only files named like clips are touched, and the temporary
``.<clip>.partial.wav`` files: a write that fails (a full disk) removes its own, and retention
removes any older than ``PARTIAL_MAX_AGE_S`` (a minute; a process killed mid-write leaves one),
so a full disk is never kept full by the clips' own leftovers.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, write_audio

logger = logging.getLogger(__name__)

CLIP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*_section_\d{2}_\d{8}T\d{6}Z_[A-Za-z0-9-]+"
                          r"\.wav$")
PARTIAL_PATTERN = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9_.-]*_section_\d{2}_\d{8}T\d{6}Z_"
                             r"[A-Za-z0-9-]+\.partial\.wav$")
# audio the ring holds beyond the pre-roll by default: how far feeding may run ahead of scoring
# and the clip still start where its window does (the daemon passes its own bound)
LAG_SECONDS = 8.0
PARTIAL_MAX_AGE_S = 60.0  # a temporary clip older than this is a leftover: no write takes so long


class RingBuffer:
    """The latest ``capacity`` samples of a stream (float32)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._data = np.zeros(max(self.capacity, 1), dtype=np.float32)
        self._end = 0  # samples pushed in total

    def push(self, samples: np.ndarray) -> None:
        """Append (N,) samples, forgetting the oldest beyond the capacity."""
        if self.capacity == 0:
            return
        pushed = np.asarray(samples, dtype=np.float32)
        kept = pushed[-self.capacity:]  # sample k sits at k % capacity
        start = (self._end + pushed.shape[0] - kept.shape[0]) % self.capacity
        first = min(kept.shape[0], self.capacity - start)
        self._data[start:start + first] = kept[:first]
        self._data[:kept.shape[0] - first] = kept[first:]
        self._end += pushed.shape[0]

    @property
    def pushed(self) -> int:
        """Samples pushed since the buffer was made or cleared."""
        return self._end

    def latest(self) -> np.ndarray:
        """(M,) the buffered samples, oldest first; M = min(capacity, samples pushed)."""
        return self.span(self._end - self.capacity, self._end)

    def span(self, start: int, end: int) -> np.ndarray:
        """Samples ``start`` to ``end`` (counted as ``pushed`` counts) that are still held,
        oldest first: the part of the range older than the buffer, or not pushed yet, is
        left out."""
        start, end = max(start, self._end - self.capacity, 0), min(end, self._end)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        first = start % self.capacity
        index = (first + np.arange(end - start)) % self.capacity
        return self._data[index].copy()

    def clear(self) -> None:
        """Forget everything (after a gap, audio before it is no longer the clip's pre-roll)."""
        self._end = 0


@dataclass
class _PendingClip:
    path: Path
    parts: list[np.ndarray]
    missing: int  # post-roll samples still to come


def clip_name(machine: str, section: int, when: datetime, episode_id: str) -> str:
    """``<machine>_section_<SS>_<YYYYmmddTHHMMSSZ>_<episode>.wav`` (``when`` in UTC)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_episode = re.sub(r"[^A-Za-z0-9-]", "-", episode_id)
    return f"{machine}_section_{section:02d}_{stamp}_{safe_episode}.wav"


class EvidenceRecorder:
    """Alarm clips of one stream, written into ``directory`` (shared by all streams)."""

    def __init__(self, directory: str | Path, machine: str, section: int,
                 pre_roll_seconds: float = 10.0, post_roll_seconds: float = 5.0,
                 max_clips: int = 500, max_age_days: float = 30.0,
                 max_megabytes: float = 1000.0,
                 on_written: Callable[[Path], None] | None = None,
                 lag_seconds: float = LAG_SECONDS) -> None:
        """``on_written``: called with each clip's path once it is written; ``lag_seconds``:
        how far the audio pushed may run ahead of the window a trigger names."""
        self.directory = Path(directory)
        self.on_written = on_written
        self.machine = machine
        self.section = section
        self.post_roll_samples = round(post_roll_seconds * SAMPLE_RATE)
        self.pre_roll_samples = round(pre_roll_seconds * SAMPLE_RATE)
        self.ring = RingBuffer(self.pre_roll_samples + round(lag_seconds * SAMPLE_RATE))
        self.max_clips = max_clips
        self.max_age_days = max_age_days
        self.max_megabytes = max_megabytes
        self._pending: list[_PendingClip] = []

    def push(self, samples: np.ndarray, discontinuity: bool = False) -> list[Path]:
        """Feed a stream's next (N,) samples; returns the clips this completed (written)."""
        if discontinuity:
            self.ring.clear()
        done = []
        for clip in self._pending:
            take = samples[:clip.missing]
            clip.parts.append(np.asarray(take, dtype=np.float32))
            clip.missing -= take.shape[0]
            if clip.missing <= 0:
                done.append(clip)
        self.ring.push(samples)
        for clip in done:
            self._pending.remove(clip)
            self._write(clip)
        return [clip.path for clip in done]

    def trigger(self, episode_id: str, when: datetime | None = None,
                end_sample: int | None = None) -> Path:
        """Start a clip for an alarm at ``when`` (UTC; default now): ``pre_roll_seconds``
        ending at ``end_sample`` (the raising window's end, counted from the start of the
        stream or its last gap, as pushed; default: the latest sample), then
        ``post_roll_seconds`` after it, from the buffer as far as it was pushed and from what
        ``push`` brings next. Returns the clip's path, which exists once the post-roll is in
        (or ``flush`` is called)."""
        when = when or datetime.now(UTC)
        path = self.directory / clip_name(self.machine, self.section, when, episode_id)
        end = self.ring.pushed if end_sample is None else min(int(end_sample), self.ring.pushed)
        pre = self.ring.span(end - self.pre_roll_samples, end)
        post = self.ring.span(end, end + self.post_roll_samples)
        clip = _PendingClip(path, [pre, post], self.post_roll_samples - post.shape[0])
        if clip.missing <= 0:
            self._write(clip)
        else:
            self._pending.append(clip)
        return path

    def flush(self) -> list[Path]:
        """Write pending clips with the post-roll they have (at shutdown)."""
        done, self._pending = self._pending, []
        for clip in done:
            self._write(clip)
        return [clip.path for clip in done]

    def _write(self, clip: _PendingClip) -> None:
        audio = np.concatenate(clip.parts) if clip.parts else np.zeros(0, np.float32)
        temporary = clip.path.with_name(f".{clip.path.stem}.partial.wav")  # not a clip's name
        try:
            write_audio(temporary, audio)
            os.replace(temporary, clip.path)
        except (OSError, RuntimeError) as err:
            # Evidence is a help, not the alarm: the event still goes out without its clip.
            # What was written of it goes, or a full disk would stay full of it.
            temporary.unlink(missing_ok=True)
            logger.error("could not write the alarm clip %s: %s; the alarm goes out without "
                         "it: check the free space of %s", clip.path, err, self.directory)
            enforce_retention(self.directory, self.max_clips, self.max_age_days,
                              self.max_megabytes)
            return
        logger.info("alarm clip %s (%.1f s)", clip.path, audio.shape[0] / SAMPLE_RATE)
        enforce_retention(self.directory, self.max_clips, self.max_age_days, self.max_megabytes)
        if self.on_written is not None:
            self.on_written(clip.path)


def enforce_retention(directory: str | Path, max_clips: int, max_age_days: float,
                      max_megabytes: float, now: float | None = None) -> list[Path]:
    """Remove the oldest clips (by modification time) beyond the limits, and temporary clips
    older than ``PARTIAL_MAX_AGE_S``; returns what it removed."""
    directory = Path(directory)
    now = time.time() if now is None else now
    clips = []
    leftovers = []
    for entry in directory.iterdir() if directory.is_dir() else []:
        try:
            if CLIP_PATTERN.match(entry.name) and entry.is_file():
                info = entry.stat()
                clips.append((info.st_mtime, entry.name, entry, info.st_size))
            elif PARTIAL_PATTERN.match(entry.name) and entry.is_file() \
                    and entry.stat().st_mtime < now - PARTIAL_MAX_AGE_S:
                entry.unlink(missing_ok=True)
                leftovers.append(entry)
        except FileNotFoundError:  # removed meanwhile (another stream's recorder)
            continue
    if leftovers:
        logger.warning("evidence retention removed %d unfinished clip(s) (.partial.wav) from %s",
                       len(leftovers), directory)
    clips.sort()  # oldest first
    removed = []
    total = sum(size for *_, size in clips)
    oldest_allowed = now - max_age_days * 86400
    while clips and (len(clips) > max_clips or clips[0][0] < oldest_allowed
                     or total > max_megabytes * 1e6):
        _, _, path, size = clips.pop(0)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        total -= size
        removed.append(path)
    if removed:
        logger.info("evidence retention removed %d old clip(s) from %s", len(removed), directory)
    return leftovers + removed
