"""What the data set (``__init__.py``) and the stream generator (``stream.py``) both draw on.

The machine type's model, the unit of a section, the plant it stands in, the condition of a
set of attributes, the level of a unit's sound and the soft limiter, and the tags of the
random sub-streams: ``numpy.random.default_rng([seed, machine, section, ..., RNG_x])`` draws
one kind of randomness each, so adding draws of one kind never changes another's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.dataset import MACHINE_TYPES
from edge.errors import BadInput
from edge.synth.machines import MODELS, MachineModel, Unit
from edge.synth.noise import Plant, draw_plant

MACHINE_RMS = 0.05  # about -26 dBFS for a unit at its nominal condition: headroom for impacts
PEAK_LIMIT = 0.98
LIMITER_KNEE = 0.7
# the last int of a random key: which kind of randomness it draws
RNG_UNIT, RNG_CLIP, RNG_FAULT, RNG_NOISE, RNG_STREAM = 0, 1, 2, 3, 4


def machine_model(machine: str) -> MachineModel:
    """The model of a machine type; BadInput for an unknown one."""
    if machine not in MODELS:
        raise BadInput(f"unknown machine type {machine!r}; pick from {', '.join(MACHINE_TYPES)} "
                       "(or 'all')")
    return MODELS[machine]


def draw_unit(machine: str, section: int, seed: int) -> Unit:
    """The physical unit of ``section`` (the same for every clip and stream of it)."""
    index = MACHINE_TYPES.index(machine)
    unit = MODELS[machine].make_unit(np.random.default_rng([seed, index, section, RNG_UNIT]))
    unit["gain"] = float(np.random.default_rng([seed, index, section, RNG_UNIT, 1]).uniform(
        0.7, 1.4))
    return unit


def machine_plant(machine: str, seed: int) -> Plant:
    """The site a machine type's units stand in (the same for all its sections)."""
    return draw_plant(np.random.default_rng([seed, MACHINE_TYPES.index(machine), RNG_NOISE]))


def condition_of(model: MachineModel, attributes: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The operating condition (model parameters) that ``attributes`` (key, value) stand for."""
    condition: dict[str, Any] = {}
    for spec, (key, value) in zip(model.attributes, attributes, strict=True):
        condition.update({**spec.source, **spec.target}[value])
        assert key == spec.key
    return condition


def attribute_combinations(model: MachineModel, domain: str
                           ) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of a domain's attribute values: ((key, value), ...) each."""
    per_key = [[(spec.key, value) for value in (spec.source if domain == "source"
                                                 else spec.target)]
               for spec in model.attributes]
    return [tuple(combo) for combo in itertools.product(*per_key)]


def soft_limit(mixed: np.ndarray) -> np.ndarray:
    """float32 of ``mixed`` (modified in place), loud peaks through a soft limiter."""
    # rare loud impacts pass a soft limiter (as a recorder's would) instead of clipping
    loud = np.abs(mixed) > LIMITER_KNEE
    if loud.any():
        over = np.abs(mixed[loud]) - LIMITER_KNEE
        room = PEAK_LIMIT - LIMITER_KNEE
        mixed[loud] = np.sign(mixed[loud]) * (LIMITER_KNEE + room * np.tanh(over / room))
    return mixed.astype(np.float32)
