"""Input devices as PortAudio (through sounddevice) sees them, and ``--mic`` lookup.

sounddevice is imported lazily: importing it loads the PortAudio C library, which an edge box
without audio hardware (a file-only replay, a test) may not have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

from edge.errors import BadInput, RuntimeFailure

logger = logging.getLogger(__name__)

PORTAUDIO_HINT = ("install the PortAudio library (Debian/Ubuntu: apt-get install libportaudio2; "
                  "Fedora: dnf install portaudio)")


@dataclass(frozen=True)
class InputDevice:
    """One capture device: PortAudio index, name, input channels, default rate (Hz), host API."""

    index: int
    name: str
    channels: int
    default_rate: float
    host_api: str

    def describe(self) -> str:
        return (f"{self.index}: {self.name!r} ({self.channels} ch, "
                f"{self.default_rate:.0f} Hz, {self.host_api})")


def import_sounddevice() -> ModuleType:
    """Import sounddevice; ``RuntimeFailure`` naming the fix when PortAudio is missing."""
    try:
        import sounddevice
    except OSError as err:  # sounddevice raises OSError("PortAudio library not found")
        raise RuntimeFailure(f"the microphone needs PortAudio, which is missing ({err}): "
                             f"{PORTAUDIO_HINT}") from err
    except ModuleNotFoundError as err:
        raise RuntimeFailure("the microphone needs the Python package 'sounddevice': "
                             "pip install sounddevice") from err
    return sounddevice


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
    except sd.PortAudioError as err:
        raise RuntimeFailure(f"PortAudio could not list the audio devices: {err}") from err
    found = []
    for info in devices:
        if int(info["max_input_channels"]) > 0:
            found.append(InputDevice(int(info["index"]), str(info["name"]),
                                     int(info["max_input_channels"]),
                                     float(info["default_samplerate"]),
                                     str(host_apis[info["hostapi"]]["name"])))
    return found


def find_input_device(spec: int | str, devices: list[InputDevice] | None = None) -> InputDevice:
    """The input device ``spec`` names: an index, an exact name, or a unique part of a name.

    Name matching ignores case; an exact name wins over partial matches. Raises ``BadInput``
    listing the inputs there are when nothing (or more than one device) matches.
    """
    devices = list_input_devices() if devices is None else devices
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        wanted = int(text)
        for device in devices:
            if device.index == wanted:
                return device
        raise BadInput(f"no input device with index {wanted}; {_available(devices)}")
    exact = [d for d in devices if d.name.lower() == text.lower()]
    if exact:
        return exact[0]
    partial = [d for d in devices if text.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = "; ".join(d.describe() for d in partial)
        raise BadInput(f"input device {text!r} matches {len(partial)} devices ({names}); "
                       "give its index or a longer part of its name")
    raise BadInput(f"no input device matches {text!r}; {_available(devices)}")


def _available(devices: list[InputDevice]) -> str:
    if not devices:
        return ("PortAudio sees no input devices at all (no sound card, or no permission: "
                "add the user to the 'audio' group); 'asd-edge devices' lists them")
    return ("the inputs are: " + "; ".join(d.describe() for d in devices)
            + " ('asd-edge devices' lists them)")
