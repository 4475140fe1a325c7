"""A tiny data set in the DCASE layout whose labels a small CNN learns in a few steps.

Each section is a unit with its own fundamental (harmonics at f0, 2 f0, 3 f0); each value of
an attribute adds a tone at its own frequency, the same for every section of that machine
type; plus white noise. ``valve`` section 01 lacks the ``load`` key, so that key's loss must
be masked for it. Target-domain clips use attribute values the source domain never has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, write_audio
from edge.dataset import format_clip_name

SECTION_F0 = {("fan", 0): 310.0, ("fan", 1): 530.0, ("valve", 0): 770.0, ("valve", 1): 1130.0}
SPEED_HZ = {"1": 2500.0, "2": 3400.0, "3": 4300.0}        # "3" only in the target domain
LOAD_HZ = {"lo": 5600.0, "hi": 6500.0, "mid": 7200.0}      # "mid" only in the target domain
SOURCE_VALUES = {"speed": ("1", "2"), "load": ("lo", "hi")}
TARGET_VALUES = {"speed": ("3",), "load": ("mid",)}


def _keys(machine: str, section: int) -> tuple[str, ...]:
    return ("speed", "load") if (machine, section) == ("valve", 0) else ("speed",)


def _render(f0: float, attributes: list[tuple[str, str]], seconds: float,
            rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = f0 * rng.uniform(0.99, 1.01)
    wave = sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in (1, 2, 3))
    for key, value in attributes:
        hz = (SPEED_HZ if key == "speed" else LOAD_HZ)[value]
        wave = wave + 0.06 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3))
    return (wave + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def write_tone_dataset(root: Path, n_source: int = 10, n_target: int = 5, seconds: float = 3.0,
                       seed: int = 0, machines: tuple[str, ...] = ("fan", "valve")) -> Path:
    """Write train (normal, both domains) and a few test clips under ``root``; returns root."""
    rng = np.random.default_rng(seed)
    for (machine, section), f0 in SECTION_F0.items():
        if machine not in machines:
            continue
        keys = _keys(machine, section)
        for domain, count in (("source", n_source), ("target", n_target)):
            values = SOURCE_VALUES if domain == "source" else TARGET_VALUES
            for index in range(count):
                attributes = [(k, values[k][index % len(values[k])]) for k in keys]
                name = format_clip_name(section, domain, "train", "normal", index, attributes)
                write_audio(root / machine / "train" / name, _render(f0, attributes, seconds, rng))
            name = format_clip_name(section, domain, "test", "normal", 0,
                                    [(k, values[k][0]) for k in keys])
            write_audio(root / machine / "test" / name,
                        _render(f0, [(k, values[k][0]) for k in keys], seconds, rng))
    return root
