"""Health of the signal, not of the machine: is a stream's audio sound at all?

A dead microphone does not sound like a healthy machine, so without this check it reads as a
machine fault (digital silence scored 426 against a threshold of 1.16) or as nothing at all
(NaN audio scores NaN, which no threshold trips). ``audio_problem`` looks at a block of
samples; ``SignalCheck`` turns a stream's blocks (and its capture's ``connected`` flag) into a
state with hysteresis:

- ``ok``: sound arrives.
- ``no_signal`` with a ``reason``: ``silence`` (RMS below ``silence_dbfs``, -100 dBFS by
  default: below any analogue microphone's own noise, so only a dead or muted input),
  ``nan`` (NaN or infinite samples), ``stuck`` (the samples do not move: a constant value or
  DC only, an input stuck at one code), ``frozen`` (the audio repeats bit-exactly what the
  stream held up to ``FROZEN_MAX_PERIOD_S`` earlier: a driver or device replaying its last
  buffer after the microphone stopped delivering, as ALSA's file device fed from a pipe does
  when its writer stops; real audio, with its noise, never repeats a whole block bit-exactly;
  a microphone resampled to 16 kHz is checked at its own rate by its capture, which marks the
  block ``repeated``) or ``device_lost`` (the capture device is gone).

A bad block is never scored (the daemon drops it, and restarts the stream's window after it,
so no window ever holds bad audio); the state turns ``no_signal`` once the bad audio has lasted
``no_signal_seconds`` of audio, or at once when a device that was open is lost (a device not
opened yet gets ``no_signal_seconds`` of wall clock), and ``ok`` again after ``ok_seconds`` of
good audio (at once when a lost device delivers sound again). Shorter runs of bad audio are
dropped without a change of state.

The log gets one line at each change, and while a stream stays without signal one summary
every ``log_interval_s`` (NaN audio used to log a warning per hop, about 170,000 lines a day).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

Reason = Literal["silence", "nan", "stuck", "frozen", "device_lost"]
SignalStateName = Literal["ok", "no_signal"]

DEFAULT_SILENCE_DBFS = -100.0
DEFAULT_NO_SIGNAL_SECONDS = 2.0
DEFAULT_OK_SECONDS = 1.0
DEFAULT_LOG_INTERVAL_S = 900.0
FROZEN_MAX_PERIOD_S = 2.0  # how far back a repeat is looked for (driver buffers are shorter)
FROZEN_KEY_SAMPLES = 32  # the prefix of a block searched for in the history
FROZEN_MAX_CANDIDATES = 64  # places the prefix matched that are checked in full, at most

REASON_TEXT: dict[str, str] = {
    "silence": "digital silence (a dead, muted or unplugged input)",
    "nan": "NaN or infinite samples (a broken driver or source)",
    "stuck": "the samples do not move (an input stuck at one value, DC only)",
    "frozen": "the audio repeats itself bit-exactly (a device or driver replaying its last "
              "buffer: the microphone stopped delivering)",
    "device_lost": "the capture device is gone",
}


def audio_problem(samples: np.ndarray, silence_dbfs: float = DEFAULT_SILENCE_DBFS
                  ) -> Reason | None:
    """What is wrong with a block of audio, or None when it is sound.

    ``samples``: (N,) float at 16 kHz in [-1, 1] (full scale 1.0); ``silence_dbfs``: the
    RMS level, in dB relative to full scale, below which the block is silence. A block with
    any NaN or infinite sample is ``"nan"``; one whose variation (standard deviation) is below
    the floor is ``"silence"`` when its level is too, else ``"stuck"`` (a constant non-zero
    value or DC only). An empty block is None (nothing to judge)."""
    count = samples.shape[0]
    if count == 0:
        return None
    floor = 10.0 ** (silence_dbfs / 20.0)
    # The common case, sound, in two passes without copies: a block whose range is r has a
    # standard deviation of at least r * sqrt(N - 1) / N (one sample at one end of the range,
    # the rest at the other), so a range that makes that reach the floor is sound (NaN and
    # infinities make the range non-finite and take the full check).
    low, high = float(samples.min()), float(samples.max())
    if count > 1 and math.isfinite(high - low) \
            and (high - low) * math.sqrt(count - 1) / count >= floor:
        return None
    if not np.isfinite(samples).all():
        return "nan"
    values = samples.astype(np.float64, copy=False)
    if float(values.std()) >= floor:
        return None
    rms = math.sqrt(float(np.mean(values * values)))
    return "silence" if rms < floor else "stuck"


def repeat_period(history: np.ndarray, samples: np.ndarray) -> int | None:
    """How many samples back the stream last held exactly ``samples``, or None.

    ``history``: (H,) the stream's samples just before ``samples`` (N,), both float32 (other
    dtypes are converted). The answer is the smallest P in 1..H with ``stream[i] ==
    stream[i - P]`` bit for bit for every sample i of the block, where ``stream`` is
    ``history`` followed by ``samples`` (so a period shorter than the block repeats within
    it). Cost: one substring search of the block's first ``FROZEN_KEY_SAMPLES`` samples in the
    history's bytes, and a full comparison at each of at most ``FROZEN_MAX_CANDIDATES`` places
    it matched; real audio matches nowhere."""
    if samples.shape[0] == 0 or history.shape[0] == 0:
        return None
    return _repeat_period(np.asarray(history, np.float32).tobytes()
                          + np.asarray(samples, np.float32).tobytes(), samples.shape[0])


def _repeat_period(data: bytes | bytearray, count: int, first: int = 0) -> int | None:
    """``repeat_period`` of the last ``count`` float32 samples of ``data[first:]`` (the
    history's bytes followed by the block's)."""
    item = np.dtype(np.float32).itemsize
    start = len(data) - count * item  # where the block begins, in bytes
    if count == 0 or start <= first:
        return None
    block = bytes(data[start:])
    key = block[:min(count, FROZEN_KEY_SAMPLES) * item]
    limit = start - item + len(key)  # matches of the key that begin before the block
    for _ in range(FROZEN_MAX_CANDIDATES):
        found = data.rfind(key, first, limit)
        if found < 0:
            return None
        limit = found + len(key) - 1
        if (found - first) % item:
            continue  # straddles two samples
        period = start - found
        if data[found:found + len(block)] == block:
            return period // item
    return None


class RepeatCheck:
    """Whether each block of a stream repeats it (``repeat_period``): holds the stream's last
    ``max_samples`` samples (``FROZEN_MAX_PERIOD_S`` at the stream's rate)."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._bytes = max_samples * np.dtype(np.float32).itemsize
        # the stream's float32 bytes from _first on; the front is dropped only once it is as
        # long as the history itself (one move per max_samples of audio, not a copy a block)
        self._buffer = bytearray()
        self._first = 0

    @property
    def history(self) -> np.ndarray:
        """(H,) float32: the stream's last samples (at most ``max_samples``)."""
        return np.frombuffer(bytes(self._buffer[self._first:]), np.float32)

    def repeats(self, samples: np.ndarray) -> bool:
        """Whether ``samples`` (N,) repeats the stream so far; then remembers them."""
        had_history = len(self._buffer) > self._first
        self._buffer += np.asarray(samples, np.float32).tobytes()
        found = had_history and _repeat_period(self._buffer, samples.shape[0],
                                               self._first) is not None
        self._first = max(self._first, len(self._buffer) - self._bytes)
        if self._first >= self._bytes:
            del self._buffer[:self._first]
            self._first = 0
        return found

    def clear(self) -> None:
        """Forget the stream (a device gone: what it delivers when back is new)."""
        self._buffer = bytearray()
        self._first = 0


@dataclass(frozen=True)
class SignalChange:
    """A change of a stream's signal state: ``since`` is the UTC epoch seconds at which the
    new state began (the first bad sample for ``no_signal``, the first good one for ``ok``);
    ``lasted_s`` how long the state before it held, in seconds (None: since the start)."""

    state: SignalStateName
    reason: Reason | None
    since: float
    lasted_s: float | None


class SignalCheck:
    """The signal state of one stream (see the module docstring); feed it every block.

    ``block`` takes a block's samples with the UTC time of its first sample (and ``repeated``:
    the source saw the block's audio repeat at its own rate, before resampling) and returns
    ``(good, change)``: whether the block may be scored, and the change of state it caused (or
    None). ``device`` takes the capture's ``connected`` flag (the daemon calls it a few times
    a second) and returns a change, or None. Time runs on the audio's own clock for blocks
    (a file replayed at ``--speed max`` behaves as in real time) and on the monotonic clock
    for a lost device, which delivers no audio to count.
    """

    def __init__(self, name: str, silence_dbfs: float = DEFAULT_SILENCE_DBFS,
                 no_signal_seconds: float = DEFAULT_NO_SIGNAL_SECONDS,
                 ok_seconds: float = DEFAULT_OK_SECONDS,
                 log_interval_s: float = DEFAULT_LOG_INTERVAL_S) -> None:
        self.name = name
        self.silence_dbfs = silence_dbfs
        self.no_signal_seconds = no_signal_seconds
        self.ok_seconds = ok_seconds
        self.log_interval_s = log_interval_s
        self.state: SignalStateName = "ok"
        self.reason: Reason | None = None
        self.since: float = time.time()
        self.dropped_seconds = 0.0  # bad audio not scored, in total
        self._no_signal_samples = round(no_signal_seconds * SAMPLE_RATE)
        self._ok_samples = round(ok_seconds * SAMPLE_RATE)
        self._bad: tuple[Reason, float, int] | None = None  # reason, start utc, samples
        self._good: tuple[float, int] | None = None  # start utc, samples (while no_signal)
        self._lost_since: float | None = None  # monotonic time the device went away
        self._was_connected = False
        self._lost_utc = 0.0
        self._summary_due = 0.0  # monotonic time of the next "still no signal" line
        self._dropped_since_summary = 0.0
        self._repeats = RepeatCheck(round(FROZEN_MAX_PERIOD_S * SAMPLE_RATE))

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def block(self, samples: np.ndarray, start_utc: float, repeated: bool = False
              ) -> tuple[bool, SignalChange | None]:
        count = samples.shape[0]  # audio is counted in samples: exact, no float drift
        problem = audio_problem(samples, self.silence_dbfs)
        repeated = self._repeats.repeats(samples) or repeated
        if problem is None and repeated:
            problem = "frozen"
        if problem is None:
            self._bad = None
            if self.state == "ok" or self.reason == "device_lost":
                # a lost device that delivers sound again is back at once (it reconnected)
                change = self._change("ok", None, start_utc) if self.state != "ok" else None
                return True, change
            start, held = self._good or (start_utc, 0)
            self._good = (start, held + count)
            if held + count >= self._ok_samples:
                return True, self._change("ok", None, start)
            return True, None
        self._good = None
        self.dropped_seconds += count / SAMPLE_RATE
        self._dropped_since_summary += count / SAMPLE_RATE
        reason, start, held = self._bad if self._bad and self._bad[0] == problem else (
            problem, start_utc, 0)
        self._bad = (reason, start, held + count)
        if held + count >= self._no_signal_samples and (
                self.state == "ok" or self.reason != reason):
            return False, self._change("no_signal", reason, start)
        if self.state == "no_signal":
            self._summarise()
        return False, None

    def device(self, connected: bool) -> SignalChange | None:
        now = time.monotonic()
        if connected:
            self._lost_since = None
            self._was_connected = True
            return None
        if self._lost_since is None:
            self._lost_since, self._lost_utc = now, time.time()
            self._repeats.clear()  # what a device back delivers is new
        if self.reason == "device_lost":
            self._summarise()
            return None
        # A device that was open and is gone is gone now (the capture has already waited for
        # it to stall); one not opened yet gets no_signal_seconds to open.
        if self._was_connected or now - self._lost_since >= self.no_signal_seconds:
            self._bad = self._good = None
            return self._change("no_signal", "device_lost", self._lost_utc)
        return None

    def _change(self, state: SignalStateName, reason: Reason | None, since: float
                ) -> SignalChange:
        lasted = since - self.since
        change = SignalChange(state, reason, since, lasted)
        self.state, self.reason, self.since = state, reason, since
        self._bad = self._good = None
        if state == "no_signal":
            logger.warning("%s: no signal: %s; not scored, no alarm can be raised until the "
                           "sound returns (summaries every %.0f min while it lasts)", self.name,
                           REASON_TEXT[reason or "silence"], self.log_interval_s / 60)
            self._summary_due = time.monotonic() + self.log_interval_s
            self._dropped_since_summary = 0.0
        else:
            logger.warning("%s: signal back after %.1f s without; scoring resumes once a "
                           "window of sound is in", self.name, max(lasted, 0.0))
        return change

    def _summarise(self) -> None:
        """One line per ``log_interval_s`` while the stream stays without signal."""
        now = time.monotonic()
        if now < self._summary_due:
            return
        self._summary_due = now + self.log_interval_s
        logger.warning("%s: still no signal (%s) for %.0f s; %.0f s of audio not scored since "
                       "the last report", self.name, self.reason, time.time() - self.since,
                       self._dropped_since_summary)
        self._dropped_since_summary = 0.0
