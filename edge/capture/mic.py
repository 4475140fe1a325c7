"""A microphone through sounddevice (PortAudio), as an iterator of 16 kHz blocks.

The audio callback runs on PortAudio's thread and only copies the chosen channel into a
bounded queue, counting input overflows and blocks dropped because the queue was full; all
other work (resampling, time stamps, reconnecting) happens in the iterating thread. A device
that is missing at start, fails to open or stops delivering is retried with exponential
backoff, logged and counted (``stats.device_errors``), never raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.audio import SAMPLE_RATE
from edge.capture.base import AudioBlock, CaptureStats
from edge.capture.devices import InputDevice, find_input_device, import_sounddevice
from edge.capture.resample import StreamingResampler
from edge.errors import AsdEdgeError
from edge.signal import FROZEN_MAX_PERIOD_S, RepeatCheck

logger = logging.getLogger(__name__)

LOSS_LOG_INTERVAL_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # closing a stream on a vanished device can hang inside PortAudio

_open_streams = 0  # streams of this process; PortAudio may only be re-initialised at zero
_open_lock = threading.Lock()


class MicSource:
    """Blocks from an input device: ``device`` is an index, a name, or part of a name.

    ``sample_rate``: the rate the device is opened at; ``None`` takes 16 kHz when the device
    accepts it, else its default rate, and resamples to 16 kHz (``StreamingResampler``).
    ``block_seconds``: the callback's block length. ``queue_blocks``: how many blocks may wait
    for the consumer before new ones are dropped (counted). Backoff between attempts to
    (re)open the device starts at ``retry_initial_s`` and doubles up to ``retry_max_s``; a
    stream that delivers nothing for ``stall_seconds`` counts as lost.
    """

    def __init__(self, device: int | str, channel: int = 0, block_seconds: float = 0.1,
                 queue_blocks: int = 50, sample_rate: int | None = None,
                 stop_event: threading.Event | None = None, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, stall_seconds: float | None = None) -> None:
        self.sd = import_sounddevice()  # no PortAudio at all is not retried: RuntimeFailure
        self.device_spec = device
        self.name = f"mic:{device}"
        self.channel = channel
        self.block_seconds = block_seconds
        self.requested_rate = sample_rate
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stall_seconds = stall_seconds or max(5.0, 20 * block_seconds)
        self.stats = CaptureStats()
        self.stop_event = stop_event or threading.Event()
        self.device: InputDevice | None = None
        self.rate = 0
        self._queue: queue.Queue[tuple[np.ndarray, float, bool]] = queue.Queue(queue_blocks)
        self._gap_pending = False  # touched only by the callback thread
        self._last_loss_log = -LOSS_LOG_INTERVAL_S

    # -- PortAudio's thread ------------------------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        overflow = bool(status.input_overflow)
        if overflow:
            self.stats.add(overflows=1)
        first_sample_time = time.time() - frames / self.rate
        try:
            self._queue.put_nowait((indata[:, self.channel].copy(), first_sample_time,
                                    overflow or self._gap_pending))
            self._gap_pending = False
        except queue.Full:
            self._gap_pending = True
            self.stats.add(dropped_blocks=1)

    # -- the iterating thread ----------------------------------------------------------------
    def _choose_rate(self, device: InputDevice) -> int:
        if self.requested_rate:
            return int(self.requested_rate)
        try:
            self.sd.check_input_settings(device=device.index, channels=self.channel + 1,
                                         samplerate=SAMPLE_RATE, dtype="float32")
            return SAMPLE_RATE
        except Exception:  # noqa: BLE001  # PortAudio says no in several ways; use the default
            return int(device.default_rate)

    def _open(self) -> Any:
        device = find_input_device(self.device_spec)  # BadInput when it is not there (yet)
        if self.channel >= device.channels:
            raise AsdEdgeError(f"{device.describe()} has {device.channels} input channel(s); "
                               f"channel {self.channel} does not exist")
        self.rate = self._choose_rate(device)
        stream = self.sd.InputStream(device=device.index, channels=self.channel + 1,
                                     samplerate=self.rate, dtype="float32",
                                     blocksize=max(1, round(self.block_seconds * self.rate)),
                                     callback=self._callback)
        global _open_streams
        with _open_lock:
            _open_streams += 1
        try:
            stream.start()
        except Exception:
            _close_stream(stream)
            raise
        self.device = device
        logger.info("%s: capturing from %s at %d Hz, channel %d", self.name, device.describe(),
                    self.rate, self.channel)
        return stream

    def _refresh_devices(self) -> None:
        """Let PortAudio enumerate again so a re-plugged device can be found.

        Re-initialising PortAudio closes every stream of the process, so it is done only while
        none is open (one microphone, or all of them lost at once).
        """
        with _open_lock:
            if _open_streams:
                return
            try:
                self.sd._terminate()
                self.sd._initialize()
            except Exception as err:  # noqa: BLE001
                logger.debug("re-initialising PortAudio failed: %s", err)

    def __iter__(self) -> Iterator[AudioBlock]:
        stream = None
        resampler: StreamingResampler | None = None
        repeats: RepeatCheck | None = None
        backoff = self.retry_initial_s
        gap = False
        inputs_seen = outputs_seen = 0
        last_data = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if stream is None:
                    try:
                        stream = self._open()
                    except Exception as err:  # noqa: BLE001  # never a crash: retry
                        self._failed(f"cannot open input device {self.device_spec!r}: "
                                     f"{_one_line(err)}", backoff)
                        if self.stop_event.wait(backoff):
                            break
                        backoff = min(backoff * 2, self.retry_max_s)
                        self._refresh_devices()
                        continue
                    if self.stats.device_errors:
                        self.stats.add(reconnects=1)
                    self.stats.connected = True
                    resampler = StreamingResampler(self.rate, SAMPLE_RATE)
                    # at 16 kHz the daemon's signal check sees the device's own samples
                    repeats = None if resampler.identity else RepeatCheck(
                        round(FROZEN_MAX_PERIOD_S * self.rate))
                    inputs_seen = outputs_seen = 0
                    last_data = time.monotonic()
                try:
                    samples, first_time, lost_before = self._queue.get(timeout=0.1)
                except queue.Empty:
                    stalled = time.monotonic() - last_data > self.stall_seconds
                    if stream.active and not stalled:
                        continue
                    why = "stopped delivering audio" if stalled else "stream stopped"
                    self._failed(f"input device {self.device_spec!r} lost ({why})", backoff)
                    _close_stream(stream)
                    stream, gap = None, True
                    _drain(self._queue)
                    if self.stop_event.wait(backoff):
                        break
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                last_data = time.monotonic()
                backoff = self.retry_initial_s
                assert resampler is not None
                if lost_before:
                    resampler.reset()
                    inputs_seen = outputs_seen = 0
                    gap = True
                    self._report_loss()
                repeated = repeats is not None and repeats.repeats(samples)
                out = resampler.process(samples)
                # The first output's input position, so time stamps follow the device's blocks.
                start_time = first_time + outputs_seen / SAMPLE_RATE - inputs_seen / self.rate
                inputs_seen += samples.shape[0]
                outputs_seen += out.shape[0]
                if out.shape[0] == 0:
                    continue
                self.stats.add(blocks=1, samples=out.shape[0])
                yield AudioBlock(out, start_time, offset_s=None, discontinuity=gap,
                                 repeated=repeated)
                gap = False
        finally:
            if stream is not None:
                _close_stream(stream)
            self.stats.connected = False

    def _report_loss(self) -> None:
        """Warn about lost audio at most every LOSS_LOG_INTERVAL_S (it can happen per block)."""
        now = time.monotonic()
        if now - self._last_loss_log >= LOSS_LOG_INTERVAL_S:
            self._last_loss_log = now
            logger.warning("%s: audio lost (so far %d block(s) dropped because scoring fell "
                           "behind, %d device overflow(s))", self.name,
                           self.stats.dropped_blocks, self.stats.overflows)

    def _failed(self, message: str, backoff: float) -> None:
        self.stats.add(device_errors=1)
        self.stats.connected = False
        self.stats.last_error = message
        logger.warning("%s; retrying in %.1f s (attempt %d)", message, backoff,
                       self.stats.device_errors)

    def close(self) -> None:
        self.stop_event.set()


def _close_stream(stream: Any) -> None:
    """Abort and close a stream, waiting at most CLOSE_TIMEOUT_S (a dead device can hang)."""
    global _open_streams

    def close() -> None:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)

    closer = threading.Thread(target=close, name="asd-edge-mic-close", daemon=True)
    closer.start()
    closer.join(CLOSE_TIMEOUT_S)
    if closer.is_alive():
        logger.warning("closing the audio stream did not finish within %.0f s; leaving it",
                       CLOSE_TIMEOUT_S)
    with _open_lock:
        _open_streams = max(0, _open_streams - 1)


def _drain(pending: queue.Queue) -> None:
    while True:
        try:
            pending.get_nowait()
        except queue.Empty:
            return


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
