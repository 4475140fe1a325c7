"""Audio sources: a microphone or a replayed file, both iterators of 16 kHz ``AudioBlock``.

``open_source(config)`` builds the source a stream's config names; the microphone's
sounddevice (PortAudio) import happens only when a microphone is opened.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from edge.capture.base import AudioBlock, AudioSource, CaptureStats
from edge.capture.devices import InputDevice, find_input_device, list_input_devices
from edge.capture.file import FileSource
from edge.capture.resample import StreamingResampler

if TYPE_CHECKING:
    from edge.config import FileSourceConfig, MicSourceConfig

__all__ = ["AudioBlock", "AudioSource", "CaptureStats", "FileSource", "InputDevice",
           "StreamingResampler", "find_input_device", "list_input_devices", "open_source"]


def open_source(config: FileSourceConfig | MicSourceConfig,
                stop_event: threading.Event | None = None) -> AudioSource:
    """The source a stream's ``source:`` config describes (see ``edge.config``)."""
    if config.type == "file":
        return FileSource(config.path, speed=config.speed, block_seconds=config.block_seconds,
                          channel=config.channel, stop_event=stop_event)
    from edge.capture.mic import MicSource

    return MicSource(config.device, channel=config.channel, block_seconds=config.block_seconds,
                     queue_blocks=config.queue_blocks, sample_rate=config.sample_rate,
                     stop_event=stop_event)
