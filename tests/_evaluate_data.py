"""Tiny machine-sound data sets in the DCASE layout for the scoring and evaluation tests.

Each section is a unit with its own fundamental; the ``speed`` attribute scales it; the target
domain uses other speeds. An anomaly adds a narrow band of noise (``anomaly_band_hz``), so a
detector and an explanation have something real to find. Real WAV files, written with
``edge.audio.write_audio`` and named with ``edge.dataset.format_clip_name``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from edge.audio import SAMPLE_RATE, write_audio
from edge.dataset import format_clip_name

ANOMALY_BAND_HZ = (3000.0, 3400.0)
SOURCE_SPEEDS = ("1", "2")
TARGET_SPEEDS = ("3",)


def machine_clip(rng: np.random.Generator, section: int, speed: str, anomaly: bool,
                 seconds: float = 2.0) -> np.ndarray:
    """(N,) float32 waveform of one clip."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120.0 * (section + 1) * (1.0 + 0.15 * int(speed))
    wave = sum(0.2 / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.28))
               for h in range(1, 6))
    wave = wave * (1.0 + 0.05 * rng.standard_normal())
    wave += 0.01 * rng.standard_normal(t.size)
    if anomaly:
        sos = butter(4, ANOMALY_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")
        wave += 0.5 * sosfilt(sos, rng.standard_normal(t.size))
    return wave.astype(np.float32)


def make_dataset(root: Path, machines=("fan",), sections=(0, 1), n_train: int = 12,
                 n_target_train: int = 3, n_test: int = 4, seconds: float = 2.0,
                 seed: int = 0) -> Path:
    """Write <root>/<machine>/{train,test}/...wav; returns ``root``."""
    rng = np.random.default_rng(seed)
    for machine in machines:
        for section in sections:
            index = 0
            plan = [("train", "source", "normal", n_train, SOURCE_SPEEDS),
                    ("train", "target", "normal", n_target_train, TARGET_SPEEDS)]
            for domain, speeds in (("source", SOURCE_SPEEDS), ("target", TARGET_SPEEDS)):
                plan += [("test", domain, "normal", n_test, speeds),
                         ("test", domain, "anomaly", n_test, speeds)]
            for split, domain, label, count, speeds in plan:
                for i in range(count):
                    speed = speeds[i % len(speeds)]
                    name = format_clip_name(section, domain, split, label, index,
                                            [("speed", speed)])
                    index += 1
                    wave = machine_clip(rng, section, speed, label == "anomaly", seconds)
                    write_audio(root / machine / split / name, wave)
    return root


def train_tiny_run(root: Path, n_test: int) -> tuple[Path, Path]:
    """A fan data set (2 sections, 3 s clips) under ``root`` and a one-epoch run on it:
    (data, run). Small enough for the evaluation tests; torch is imported here only."""
    import torch

    from training.train import TrainConfig, train

    torch.set_num_threads(2)
    data = make_dataset(root / "data", sections=(0, 1), n_train=8, n_target_train=2,
                        n_test=n_test, seconds=3.0)
    train(TrainConfig(data=str(data), machines=["fan"], out=str(root / "run"), epochs=1,
                      progress=False, bn_clips=8, section_dim=8, attribute_dim=8))
    return data, root / "run"
