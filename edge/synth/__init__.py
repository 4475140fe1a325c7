"""Synthetic machine sounds in the DCASE layout, for tests, the demo and what-if experiments.

``synthesize_dataset`` writes a development-style data set: per machine type, sections that
are physically different units, source-domain and (few) target-domain training clips under
operating conditions given as attributes, and a test split with normal and anomalous clips of
both domains. ``synthesize_stream`` writes one long recording of one unit, with what a plant does
to it over hours (changes of condition, drift, background changes, transients, splices; off by
default) and zero or more fault intervals, with a JSON file of labels saying where everything
is; ``synthesize_stream_set`` writes a test set of them (``stream.py``).

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, machine, section, clip),
so a seed gives the same bytes on every run. The physics lives in ``machines.py``, the plant
background in ``noise.py``, the fault signatures in ``faults.py``, what the data set and the
streams share (a section's unit, its plant, conditions, the limiter) in ``common.py``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, write_audio
from edge.dataset import DOMAINS, MACHINE_TYPES, format_clip_name
from edge.errors import BadInput
from edge.synth import common
from edge.synth.faults import Fault
from edge.synth.machines import MODELS
from edge.synth.noise import factory_noise
from edge.synth.stream import (
    FaultSpec,
    StreamOptions,
    synthesize_stream,
    synthesize_stream_set,
)

logger = logging.getLogger(__name__)

__all__ = ["MACHINE_TYPES", "FaultSpec", "StreamOptions", "attribute_values", "default_seconds",
           "render_clip", "synthesize_dataset", "synthesize_stream", "synthesize_stream_set"]


def default_seconds(machine: str) -> float:
    """Clip length as in DCASE 2023: 12 s for ToyCar and ToyTrain, 10 s for the others."""
    return 12.0 if machine in ("ToyCar", "ToyTrain") else 10.0


def attribute_values(machine: str, domain: str) -> dict[str, list[str]]:
    """The attribute values a domain uses for a machine type: key -> values."""
    model = common.machine_model(machine)
    return {spec.key: list(spec.source if domain == "source" else spec.target)
            for spec in model.attributes}


def render_clip(machine: str, section: int, attributes: Sequence[tuple[str, str]],
                n_samples: int, clip_seed: Sequence[int], fault: Fault | None = None,
                noise: bool = True, seed: int = 0, snr_db: float | None = None) -> np.ndarray:
    """One clip (n_samples,) float32 in [-1, 1] of unit ``section`` under ``attributes``.

    ``clip_seed`` (ints) draws this clip's randomness; the unit comes from ``seed``. The
    background is plant noise at an SNR drawn from the machine's range, or at ``snr_db`` (the
    noisy benchmark's +6, 0 and -6 dB); ``noise=False`` gives the machine alone (for checks).
    """
    model = common.machine_model(machine)
    unit = common.draw_unit(machine, section, seed)
    condition = common.condition_of(model, attributes)
    rng = np.random.default_rng([*clip_seed, common.RNG_CLIP])
    sound = model.render(unit, condition, n_samples, rng, fault)
    noise_rng = np.random.default_rng([*clip_seed, common.RNG_NOISE])
    drawn = noise_rng.uniform(*model.snr_db)  # drawn always: the same clip either way
    snr_db = drawn if snr_db is None else snr_db
    background = (factory_noise(common.machine_plant(machine, seed), noise_rng, n_samples) if noise
                  else np.zeros(n_samples))
    return _mix(sound, background, unit["gain"], snr_db)


def _mix(sound: np.ndarray, background: np.ndarray, gain: float, snr_db: float) -> np.ndarray:
    """Machine (RMS near 1 at its nominal condition) plus unit-RMS background at ``snr_db``."""
    level = common.MACHINE_RMS * gain
    return common.soft_limit(level * sound + level * 10 ** (-snr_db / 20) * background)


def _check_counts(**counts: float) -> None:
    for name, value in counts.items():
        if value < 0:
            raise BadInput(f"{name} = {value} is negative; give 0 or more")


def synthesize_dataset(out: str | Path, machines: Sequence[str] = MACHINE_TYPES,
                       sections: int = 3, n_train: int = 100, n_target_train: int = 10,
                       n_test: int = 10, seconds: float | None = None, seed: int = 0,
                       snr_db: float | None = None) -> Path:
    """Write a development-layout data set under ``out`` and return ``out``.

    Per machine and section: ``n_train`` source and ``n_target_train`` target normal training
    clips, and ``n_test`` test clips per domain and label (4 * n_test). Clips are ``seconds``
    long (None: 10 s, 12 s for ToyCar/ToyTrain), 16 kHz mono 16-bit, named by
    ``format_clip_name``; ``<machine>/attributes_<SS>.csv`` lists every clip's attributes.
    ``snr_db``: every clip's plant background at this signal-to-noise ratio instead of one
    drawn from the machine type's range (the same machine sound and background otherwise).
    """
    out = Path(out)
    machines = list(machines)
    for machine in machines:
        common.machine_model(machine)
    _check_counts(n_train=n_train, n_target_train=n_target_train, n_test=n_test)
    if not 1 <= sections <= 100:
        raise BadInput(f"sections = {sections}: give 1 to 100 (section numbers have two digits)")
    if snr_db is not None and not -30 <= snr_db <= 60:
        raise BadInput(f"snr = {snr_db} dB: give -30 to 60 (the benchmark uses 6, 0 and -6)")
    if seconds is not None and not 0 < seconds <= 600:
        raise BadInput(f"seconds = {seconds}: give a clip length above 0 and at most 600 s")
    groups = [("train", "source", "normal", n_train), ("train", "target", "normal", n_target_train)]
    groups += [("test", domain, label, n_test) for domain in DOMAINS
               for label in ("normal", "anomaly")]
    written = 0
    for machine in machines:
        model = MODELS[machine]
        machine_index = MACHINE_TYPES.index(machine)
        n_samples = int(round((seconds or default_seconds(machine)) * SAMPLE_RATE))
        for section in range(sections):
            rows: list[list[str]] = []
            for split, domain, label, count in groups:
                combos = common.attribute_combinations(model, domain)
                key = [seed, machine_index, section, ("train", "test").index(split),
                       DOMAINS.index(domain), ("normal", "anomaly").index(label)]
                order = np.random.default_rng([*key, common.RNG_STREAM]).permutation(
                    max(count, 1) * len(combos))[:count] % len(combos)
                for index in range(count):
                    attributes = combos[int(order[index])]
                    fault = None
                    if label == "anomaly":
                        fault_rng = np.random.default_rng([*key, index, common.RNG_FAULT])
                        kind = model.faults[index % len(model.faults)]
                        fault = Fault(kind, float(fault_rng.uniform()), fault_rng)
                    waveform = render_clip(machine, section, attributes, n_samples,
                                           [*key, index], fault, seed=seed, snr_db=snr_db)
                    name = format_clip_name(section, domain, split, label, index, attributes)
                    write_audio(out / machine / split / name, waveform)
                    rows.append([f"{split}/{name}", *[item for pair in attributes
                                                      for item in pair]])
                    written += 1
            _write_attributes(out / machine / f"attributes_{section:02d}.csv", rows,
                              len(model.attributes))
    logger.info("wrote %d clips under %s", written, out)
    return out


def _write_attributes(path: Path, rows: list[list[str]], n_keys: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["file_name"] + [f"d{i}{kind}" for i in range(1, n_keys + 1) for kind in "pv"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
