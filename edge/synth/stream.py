"""Long recordings of one unit as a plant hears it for hours, with labels: ``synthesize_stream``
and ``synthesize_stream_set``.

A stream is the unit of ``synthesize_dataset(seed=seed)``'s section, moving between the
operating conditions (attribute combinations) of its domain(s), under what a plant does to a
healthy machine (``StreamOptions``): steps and ramps between conditions, a slow level drift,
the background stepping louder and quieter, another machine switching on and off, transients
(impacts, a door, speech babble, a forklift passing) and splices (the audio jumps to a fresh
rendering, with a click). Zero or more fault intervals (``FaultSpec``) come on suddenly or
grow from severity 0 to their value over ``ramp_s``. The JSON beside the audio says where
everything is (docs/SYNTH.md, "Stream labels").

Rendering goes block by block (at most 60 s of audio; a stream of at most 120 s with nothing
changing is one block, byte for byte what the generator always wrote): each block is a fresh
rendering of the unit under its state's condition, plus the plant background and, while it
runs, the other machine; blocks join by equal-power cross-fades (the ramp into a state, 20 ms
for a step, 0.25 s inside a state) or abruptly at a splice, and are written as they are done, so
memory stays that of one block whatever the length.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edge.audio import SAMPLE_RATE
from edge.dataset import DOMAINS, MACHINE_TYPES
from edge.errors import BadInput
from edge.synth import dsp
from edge.synth.common import (
    MACHINE_RMS,
    RNG_CLIP,
    RNG_FAULT,
    RNG_NOISE,
    RNG_STREAM,
    attribute_combinations,
    condition_of,
    draw_unit,
    machine_model,
    machine_plant,
    soft_limit,
)
from edge.synth.faults import Fault
from edge.synth.machines import MODELS, MachineModel, Unit
from edge.synth.noise import factory_noise

logger = logging.getLogger(__name__)

SR = SAMPLE_RATE
LABELS_FORMAT, LABELS_VERSION = "asd-edge-stream-labels", 2
MAX_SECONDS = 24 * 3600.0
TICK = SR // 100  # planned times (states, events) fall on 10 ms
MAX_BLOCK_S = 60.0  # longest rendering: about 200 MB at its peak
SINGLE_BLOCK_S = 120.0  # a stream this short with nothing changing is one rendering
LADDER = 5 * SR  # render lengths are multiples of 5 s: fast FFT sizes, few cached responses
SEAM_S = 0.25  # cross-fade between two renderings of the same state
STEP_S = 0.02  # a step between states is this short a cross-fade (no click)
GRADUAL_STEP_S = 15.0  # a gradual fault is rendered at a severity every this many seconds
DRIFT_KNOT_S = 600.0
ONSETS = ("sudden", "gradual")
EVENT_KINDS = ("impact", "door", "speech", "forklift", "splice", "background", "other_machine")
TRANSIENT_KINDS = ("impact", "door", "speech", "forklift")
TRANSIENT_WEIGHTS = (0.35, 0.2, 0.3, 0.15)
FAULT_RAMP_S = 0.05  # a fault fades in and out over this, so it does not click
# sub-streams of the stream's key: plan draws under [*key, RNG_STREAM, x], renderings under
# [*key, x, index + 1] (numpy seeds ignore trailing zeros: no index may end a key as 0)
_STATES, _SPLICES, _BACKGROUND, _OTHER, _TRANSIENTS, _DRIFT = 1, 2, 3, 4, 5, 6
_OTHER_RENDER, _TRANSIENT_RENDER = 5, 6


@dataclass(frozen=True)
class StreamOptions:
    """What the plant does to a healthy unit. The defaults are all off: one condition, a
    stationary recording (what ``synthesize_stream`` always wrote); ``StreamOptions.plant()``
    turns everything on at the documented defaults (``PLANT``).

    - ``state_seconds`` (min, max): the unit changes condition after a uniform draw in this
      range (None: never); a change is a step (``step_fraction`` of them) or a ramp, a
      cross-fade of a uniform draw in ``ramp_seconds`` between renderings of the two conditions;
    - ``drift_db``: the unit's level wanders within +-this over the hours (temperature, wear);
    - ``background_changes_per_hour``: the plant background steps by 2-5 dB (within +-6 dB of
      its starting level) over 0.5-3 s (machines nearby starting and stopping);
    - ``other_machine_per_hour``: a unit of another machine type nearby runs for 1-5 min
      (fading in and out over 2-5 s), 8-18 dB below the unit;
    - ``transients_per_hour``: impacts, door slams, speech babble, forklifts passing;
    - ``splices_per_hour``: the audio jumps to a fresh rendering with a click (a dropout of
      2-20 ms half of the time), as between two recorded files.
    """

    state_seconds: tuple[float, float] | None = None
    ramp_seconds: tuple[float, float] = (0.5, 10.0)
    step_fraction: float = 0.5
    drift_db: float = 0.0
    background_changes_per_hour: float = 0.0
    other_machine_per_hour: float = 0.0
    transients_per_hour: float = 0.0
    splices_per_hour: float = 0.0

    @classmethod
    def plant(cls, **overrides: Any) -> StreamOptions:
        """The plant defaults (``PLANT``) with ``overrides``."""
        return replace(PLANT, **overrides)

    def check(self) -> None:
        if self.state_seconds is not None:
            low, high = self.state_seconds
            if not 1.0 <= low <= high:
                raise BadInput(f"state seconds {low:g},{high:g}: give MIN,MAX with "
                               "1 <= MIN <= MAX (seconds a condition lasts)")
        low, high = self.ramp_seconds
        if not 0.0 < low <= high <= 60.0:
            raise BadInput(f"ramp seconds {low:g},{high:g}: give MIN,MAX with "
                           "0 < MIN <= MAX <= 60")
        if not 0.0 <= self.step_fraction <= 1.0:
            raise BadInput(f"step fraction {self.step_fraction:g}: give 0 to 1")
        if not 0.0 <= self.drift_db <= 6.0:
            raise BadInput(f"drift {self.drift_db:g} dB: give 0 to 6 dB")
        for name, value in (("background changes", self.background_changes_per_hour),
                            ("other machine runs", self.other_machine_per_hour),
                            ("transients", self.transients_per_hour),
                            ("splices", self.splices_per_hour)):
            if not 0.0 <= value <= 600.0:
                raise BadInput(f"{name} per hour = {value:g}: give 0 to 600")


PLANT = StreamOptions(state_seconds=(30.0, 120.0), drift_db=1.5, background_changes_per_hour=6.0,
                      other_machine_per_hour=3.0, transients_per_hour=20.0,
                      splices_per_hour=2.0)


@dataclass(frozen=True)
class FaultSpec:
    """A fault interval [start_s, end_s) of a stream. ``kind`` None: drawn from the machine's
    kinds; ``severity`` None: drawn from 0.6-1.0 (0 barely there, 1 obvious, up to 2);
    ``onset`` "sudden" (a 50 ms fade) or "gradual" (severity grows linearly from 0 to its
    value over ``ramp_s``; None: drawn from 60-300 s, at most the interval)."""

    start_s: float
    end_s: float
    kind: str | None = None
    severity: float | None = None
    onset: str = "sudden"
    ramp_s: float | None = None


@dataclass(frozen=True)
class _Fault:
    start_s: float
    end_s: float
    kind: str
    severity: float
    onset: str
    ramp_s: float  # gradual: the ramp; sudden: the fade in and out
    edge_s: float  # fade in and out at the interval's edges
    nodes: int  # gradual: rendered at severity * j / nodes, j = 0..nodes

    def label(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "kind": self.kind,
                "severity": round(self.severity, 3), "onset": self.onset,
                "ramp_s": round(self.ramp_s, 3)}


@dataclass(frozen=True)
class _State:
    start: int
    end: int
    domain: str
    attributes: tuple[tuple[str, str], ...]
    fade: int  # samples of the ramp into it (0: a step)


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    fade: int  # samples at its start cross-faded from the block before (0: abrupt, a splice)
    state: int


@dataclass
class _Transient:
    start: int
    kind: str
    index: int
    length: int
    audio: np.ndarray | None = None


@dataclass(frozen=True)
class _Splice:
    position: int
    spike: float
    dropout: int


@dataclass
class _Knots:
    """A piecewise-linear function of time (seconds), evaluated with ``np.interp``."""

    times: list[float] = field(default_factory=lambda: [0.0])
    values: list[float] = field(default_factory=lambda: [0.0])

    def add(self, time_s: float, value: float) -> None:
        self.times.append(time_s)
        self.values.append(value)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.times, self.values)

    @property
    def flat(self) -> bool:
        return not any(self.values)


def _ticks(seconds: float) -> int:
    return max(1, int(round(seconds * 100))) * TICK


def _seconds(samples: int) -> float:
    return round(samples / SR, 4)


def _check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    domains = tuple(domains)
    if not domains or any(d not in DOMAINS for d in domains) or len(set(domains)) < len(domains):
        raise BadInput(f"domains {','.join(domains) or '(none)'}: use 'source', 'target' or "
                       "'source,target'")
    return domains


def _resolve_faults(model: MachineModel, machine: str, specs: Sequence[FaultSpec],
                    seconds: float, choice: np.random.Generator) -> list[_Fault]:
    ordered = sorted(specs, key=lambda s: s.start_s)
    for spec in ordered:
        if spec.start_s < 0 or spec.end_s <= spec.start_s or spec.end_s > seconds:
            raise BadInput(f"fault interval [{spec.start_s:g}, {spec.end_s:g}) s is not inside "
                           f"the {seconds:g} s recording; choose --fault-start >= 0 and "
                           "--fault-seconds > 0 with start + length <= --seconds")
        if spec.kind is not None and spec.kind not in model.faults:
            raise BadInput(f"fault kind {spec.kind!r} is not one of {machine}'s: "
                           f"{', '.join(model.faults)}")
        if spec.onset not in ONSETS:
            raise BadInput(f"fault onset {spec.onset!r}: use 'sudden' or 'gradual'")
        if spec.ramp_s is not None and not 0 < spec.ramp_s <= spec.end_s - spec.start_s:
            raise BadInput(f"fault ramp {spec.ramp_s:g} s: give more than 0 and at most the "
                           f"fault's length ({spec.end_s - spec.start_s:g} s)")
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start_s < before.end_s:
            raise BadInput(f"fault intervals [{before.start_s:g}, {before.end_s:g}) and "
                           f"[{after.start_s:g}, {after.end_s:g}) overlap; give separate ones")
    resolved = []
    for spec in ordered:
        kind = spec.kind or model.faults[int(choice.integers(len(model.faults)))]
        drawn = float(choice.uniform(0.6, 1.0))
        if spec.severity is not None and not 0.0 <= spec.severity <= 2.0:
            raise BadInput(f"fault severity {spec.severity}: give a value from 0 (barely "
                           "there) to 2")
        severity = drawn if spec.severity is None else float(spec.severity)
        length = spec.end_s - spec.start_s
        edge = min(FAULT_RAMP_S, length / 2)
        if spec.onset == "sudden":
            ramp, nodes = edge, 1
        else:
            ramp = spec.ramp_s if spec.ramp_s is not None else min(
                round(float(choice.uniform(60.0, 300.0)), 2), length)
            nodes = int(np.clip(math.ceil(ramp / GRADUAL_STEP_S), 2, 20))
        resolved.append(_Fault(float(spec.start_s), float(spec.end_s), kind, severity,
                               spec.onset, float(ramp), edge, nodes))
    return resolved


class _Stream:
    """One stream's plan (states, blocks, events) and its block-by-block rendering."""

    def __init__(self, machine: str, section: int, seconds: float, seed: int,
                 domains: tuple[str, ...], options: StreamOptions, take: int,
                 fault_specs: Sequence[FaultSpec]) -> None:
        self.machine, self.section, self.seconds, self.seed = machine, section, seconds, seed
        self.model = MODELS[machine]
        self.domains, self.options = domains, options
        self.n = int(round(seconds * SR))
        self.key = [seed, MACHINE_TYPES.index(machine), section, 9, DOMAINS.index(domains[0])]
        if take:
            self.key.append(take)
        choice = np.random.default_rng([*self.key, RNG_STREAM])
        combos = attribute_combinations(self.model, domains[0])
        self.attributes = combos[int(choice.integers(len(combos)))]
        self.faults = _resolve_faults(self.model, machine, fault_specs, seconds, choice)
        self.unit = draw_unit(machine, section, seed)
        self.level = MACHINE_RMS * self.unit["gain"]
        self.plant = machine_plant(machine, seed)
        # the first block's background draws its SNR first, as a single-block stream always did
        self._first_noise = self._rng(RNG_NOISE)
        low, high = self.model.snr_db
        self.snr_db = float(self._first_noise.uniform(low + (high - low) / 3,
                                                      high - (high - low) / 3))
        self.events: list[dict[str, Any]] = []
        self._plan_states()
        self._plan_splices()
        self._plan_blocks()
        self.drift = self._plan_drift()
        self.background = self._plan_background()
        self.other_on = self._plan_other()
        self.transients = self._plan_transients()

    def _rng(self, *path: int) -> np.random.Generator:
        return np.random.default_rng([*self.key, *path])

    # ------------------------------------------------------------------------------- plan

    def _plan_states(self) -> None:
        options, n = self.options, self.n
        first = (self.domains[0], self.attributes)
        bounds = [0, n]
        if options.state_seconds is not None:
            rng = self._rng(RNG_STREAM, _STATES)
            low, high = options.state_seconds
            bounds = [0]
            while bounds[-1] < n:
                bounds.append(bounds[-1] + _ticks(rng.uniform(low, high)))
            bounds[-1] = n
            if len(bounds) > 2 and bounds[-1] - bounds[-2] < _ticks(low / 2):
                del bounds[-2]  # a stub at the end joins the state before it
        self.states = [_State(0, bounds[1], first[0], first[1], 0)]
        current = first
        rng = self._rng(RNG_STREAM, _STATES, 1)
        for start, end in zip(bounds[1:-1], bounds[2:], strict=True):
            domain = self.domains[int(rng.integers(len(self.domains)))]
            combos = [c for c in attribute_combinations(self.model, domain)
                      if (domain, c) != current]
            attributes = combos[int(rng.integers(len(combos)))]
            step = rng.uniform() < options.step_fraction
            ramp = _ticks(rng.uniform(*options.ramp_seconds))
            fade = 0 if step else min(ramp, (end - start) // 2 // TICK * TICK)
            self.states.append(_State(start, end, domain, attributes, fade))
            current = (domain, attributes)

    def _plan_splices(self) -> None:
        rng = self._rng(RNG_STREAM, _SPLICES)
        count = int(rng.poisson(self.options.splices_per_hour * self.seconds / 3600))
        times = np.sort(rng.uniform(0, self.seconds, count))
        spikes = rng.uniform(0.05, 0.3, count) * rng.choice([-1.0, 1.0], count)
        dropouts = np.where(rng.uniform(size=count) < 0.5,
                            np.rint(rng.uniform(0.002, 0.02, count) * SR), 0).astype(int)
        margin = SR
        busy = [(s.start - margin, s.start + s.fade + margin) for s in self.states[1:]]
        self.splices: list[_Splice] = []
        for time_s, spike, dropout in zip(times.tolist(), spikes.tolist(), dropouts.tolist(),
                                          strict=True):
            position = _ticks(time_s)
            if not margin <= position <= self.n - margin:
                continue
            if any(low <= position <= high for low, high in busy):
                continue
            if self.splices and position - self.splices[-1].position < margin:
                continue
            self.splices.append(_Splice(position, spike, int(dropout)))
            self.events.append({"start_s": _seconds(position),
                                "end_s": _seconds(position + max(dropout, TICK)),
                                "kind": "splice"})

    def _plan_blocks(self) -> None:
        starts = {s.start: k for k, s in enumerate(self.states)}
        cuts = sorted({*starts, *(s.position for s in self.splices)} - {0})
        pieces = list(zip([0, *cuts], [*cuts, self.n], strict=True))
        self.blocks: list[_Block] = []
        state = 0
        for begin, end in pieces:
            if begin in starts:
                state = starts[begin]
                first_fade = self.states[state].fade or (_ticks(STEP_S) if state else 0)
            else:
                first_fade = 0  # a splice
            length = end - begin
            single = len(pieces) == 1 and length <= SINGLE_BLOCK_S * SR
            parts = 1 if single else math.ceil(length / (MAX_BLOCK_S * SR))
            edges = [begin + int(round(length * i / parts / TICK)) * TICK for i in range(parts)]
            for i, (a, b) in enumerate(zip(edges, [*edges[1:], end], strict=True)):
                self.blocks.append(_Block(a, b, first_fade if i == 0 else _ticks(SEAM_S),
                                          state))

    def _plan_drift(self) -> _Knots:
        knots = _Knots()
        if self.options.drift_db <= 0:
            return knots
        rng = self._rng(RNG_STREAM, _DRIFT)
        value, count = 0.0, int(self.seconds // DRIFT_KNOT_S) + 2
        steps = rng.normal(0.0, 0.6, count)
        for k in range(1, count):
            value = float(np.clip(value + steps[k], -1.0, 1.0))
            knots.add(k * DRIFT_KNOT_S, value * self.options.drift_db)
        return knots

    def _plan_background(self) -> _Knots:
        knots = _Knots()
        rng = self._rng(RNG_STREAM, _BACKGROUND)
        count = int(rng.poisson(self.options.background_changes_per_hour * self.seconds / 3600))
        times = np.sort(rng.uniform(0, self.seconds, count))
        sizes = rng.uniform(2.0, 5.0, count) * rng.choice([-1.0, 1.0], count)
        ramps = rng.uniform(0.5, 3.0, count)
        level = 0.0
        for time_s, size, ramp in zip(times.tolist(), sizes.tolist(), ramps.tolist(),
                                      strict=True):
            start, stop = _ticks(time_s), _ticks(time_s) + _ticks(ramp)
            if start <= _ticks(knots.times[-1]) or stop > self.n:
                continue
            new = level + size if abs(level + size) <= 6.0 else level - size
            knots.add(_seconds(start), level)
            knots.add(_seconds(stop), new)
            level = new
            self.events.append({"start_s": _seconds(start), "end_s": _seconds(stop),
                                "kind": "background"})
        return knots

    def _plan_other(self) -> _Knots:
        knots = _Knots()
        rng = self._rng(RNG_STREAM, _OTHER)
        others = [m for m in MACHINE_TYPES if m != self.machine]
        self.other_machine = others[int(rng.integers(len(others)))]
        self.other_section = int(rng.integers(50, 100))
        model = MODELS[self.other_machine]
        combos = attribute_combinations(model, "source")
        self.other_condition = condition_of(model, combos[int(rng.integers(len(combos)))])
        self.other_gain = 10 ** (-rng.uniform(8.0, 18.0) / 20)
        self.other_corner_hz = float(rng.uniform(1500.0, 4000.0))
        count = int(rng.poisson(self.options.other_machine_per_hour * self.seconds / 3600))
        starts = np.sort(rng.uniform(0, self.seconds, count))
        lengths = rng.uniform(60.0, 300.0, count)
        fades = rng.uniform(2.0, 5.0, count)
        runs: list[list[int]] = []
        for start_s, length, fade in zip(starts.tolist(), lengths.tolist(), fades.tolist(),
                                         strict=True):
            start, stop = _ticks(start_s), min(_ticks(start_s + length), self.n)
            if runs and start <= runs[-1][1] + SR:
                runs[-1][1] = max(runs[-1][1], stop)  # overlapping runs make one
            elif stop - start >= 2 * _ticks(fade):
                runs.append([start, stop, _ticks(fade)])
        for start, stop, fade in runs:
            fade = min(fade, (stop - start) // 2)
            for time_s, value in ((start, 0.0), (start + fade, 1.0), (stop - fade, 1.0),
                                  (stop, 0.0)):
                knots.add(time_s / SR, value)
            self.events.append({"start_s": _seconds(start), "end_s": _seconds(stop),
                                "kind": "other_machine"})
        self.other_unit: Unit = draw_unit(self.other_machine, self.other_section, self.seed)
        return knots

    def _plan_transients(self) -> list[_Transient]:
        rng = self._rng(RNG_STREAM, _TRANSIENTS)
        count = int(rng.poisson(self.options.transients_per_hour * self.seconds / 3600))
        kinds = rng.choice(len(TRANSIENT_KINDS), count, p=TRANSIENT_WEIGHTS)
        lengths = rng.uniform(size=count)
        starts = rng.uniform(size=count)
        transients = []
        for index, (kind_index, fraction, where) in enumerate(
                zip(kinds.tolist(), lengths.tolist(), starts.tolist(), strict=True)):
            kind = TRANSIENT_KINDS[kind_index]
            low, high = TRANSIENT_SECONDS[kind]
            length = min(_ticks(low + (high - low) * fraction), self.n)
            start = int(where * (self.n - length) / TICK) * TICK
            transients.append(_Transient(start, kind, index, length))
            self.events.append({"start_s": _seconds(start), "end_s": _seconds(start + length),
                                "kind": kind})
        return sorted(transients, key=lambda t: t.start)

    # ----------------------------------------------------------------------------- render

    def _fault_mix(self, t: np.ndarray) -> tuple[np.ndarray | None,
                                                 list[tuple[int, float, np.ndarray]]]:
        """The normal rendering's weight (None: 1 throughout) and (fault, severity, weight)
        of each faulty rendering needed over times ``t``."""
        total: np.ndarray | None = None
        parts = []
        for i, fault in enumerate(self.faults):
            if t[-1] < fault.start_s or t[0] >= fault.end_s:
                continue
            presence = np.clip(np.minimum(t - fault.start_s, fault.end_s - t) / fault.edge_s,
                               0.0, 1.0)
            if not presence.any():
                continue
            if fault.onset == "sudden":
                parts.append((i, fault.severity, presence))
            else:
                u = np.clip((t - fault.start_s) / fault.ramp_s, 0.0, 1.0) * fault.nodes
                for j in range(fault.nodes + 1):
                    weight = np.clip(1.0 - np.abs(u - j), 0.0, None) * presence
                    if weight.any():
                        parts.append((i, fault.severity * j / fault.nodes, weight))
            total = presence if total is None else total + presence
        return (None if total is None else 1 - total), parts

    def _machine(self, index: int, block: _Block, t: np.ndarray, size: int) -> np.ndarray:
        state = self.states[block.state]
        condition = condition_of(self.model, state.attributes)
        clip_key = [RNG_CLIP] if index == 0 else [RNG_CLIP, index]
        need = t.shape[0]

        def render(fault: Fault | None) -> np.ndarray:
            sound = self.model.render(self.unit, condition, size, self._rng(*clip_key), fault)
            return sound[:need]

        normal_weight, parts = self._fault_mix(t)
        if normal_weight is None:
            sound = render(None)
        elif normal_weight.any():
            sound = render(None) * normal_weight
        else:
            sound = np.zeros(need)
        for i, severity, weight in parts:
            fault_key = [RNG_FAULT] if i == 0 and index == 0 else [RNG_FAULT, i + 1, index + 1]
            fault = self.faults[i]
            sound = sound + render(Fault(fault.kind, severity, self._rng(*fault_key))) * weight
        sound = self.level * sound
        if not self.drift.flat:
            sound = sound * 10 ** (self.drift(t) / 20)
        return sound

    def _render(self, index: int, block: _Block, need: int) -> np.ndarray:
        """Block ``index``: ``need`` samples from its start (its own and the next fade's)."""
        size = need if len(self.blocks) == 1 else -(-need // LADDER) * LADDER
        t = (block.start + np.arange(need)) / SR
        mixed = self._machine(index, block, t, size)
        noise_rng = self._first_noise if index == 0 else self._rng(RNG_NOISE, index)
        background = factory_noise(self.plant, noise_rng, size)[:need]
        background = self.level * 10 ** (-self.snr_db / 20) * background
        if not self.background.flat:
            background = background * 10 ** (self.background(t) / 20)
        mixed = mixed + background
        on = self.other_on(t)
        if on.any():
            model = MODELS[self.other_machine]
            other = model.render(self.other_unit, self.other_condition, size,
                                 self._rng(_OTHER_RENDER, index + 1), None)
            distance = 1 / np.sqrt(1 + (dsp.rfft_freqs(size) / self.other_corner_hz) ** 2)
            other = dsp.apply_response(other, distance)[:need]
            mixed = mixed + self.level * self.other_gain * on * other
        return mixed

    def _add_transients(self, out: np.ndarray, start: int) -> None:
        stop = start + out.shape[0]
        for transient in self.transients:
            if transient.start >= stop or transient.start + transient.length <= start:
                continue
            if transient.audio is None:
                rng = self._rng(_TRANSIENT_RENDER, transient.index + 1)
                transient.audio = self.level * TRANSIENT_RENDERERS[transient.kind](
                    rng, transient.length)
            a, b = max(start, transient.start), min(stop, transient.start + transient.length)
            out[a - start:b - start] += transient.audio[a - transient.start:b - transient.start]
            if b == transient.start + transient.length:
                transient.audio = None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        splices = {s.position: s for s in self.splices}
        tail: np.ndarray | None = None
        try:
            with sf.SoundFile(str(partial), "w", SR, 1, subtype="PCM_16",
                              format=(path.suffix.lstrip(".") or "wav").upper()) as handle:
                for index, block in enumerate(self.blocks):
                    nxt = self.blocks[index + 1].fade if index + 1 < len(self.blocks) else 0
                    length = block.end - block.start
                    mixed = self._render(index, block, length + nxt)
                    out, next_tail = mixed[:length], mixed[length:]
                    if tail is not None and block.fade:
                        u = (np.arange(block.fade) + 0.5) / block.fade * (np.pi / 2)
                        out[:block.fade] = tail * np.cos(u) + out[:block.fade] * np.sin(u)
                    tail = next_tail
                    self._add_transients(out, block.start)
                    splice = splices.get(block.start)
                    if splice is not None:
                        out[0] += splice.spike
                        out[1] -= 0.5 * splice.spike
                    waveform = soft_limit(out)
                    if splice is not None and splice.dropout:
                        waveform[1:splice.dropout] = 0.0
                    handle.write(np.clip(waveform, -1.0, 1.0))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def labels(self) -> dict[str, Any]:
        faults = [fault.label() for fault in self.faults]
        states = [{"start_s": _seconds(s.start), "end_s": self.seconds if s.end == self.n
                   else _seconds(s.end), "domain": s.domain, "attributes": dict(s.attributes),
                   "transition_s": _seconds(s.fade)} for s in self.states]
        events = sorted(self.events, key=lambda e: (e["start_s"], e["end_s"], e["kind"]))
        return {"format": LABELS_FORMAT, "version": LABELS_VERSION, "machine": self.machine,
                "section": self.section, "seconds": float(self.seconds), "sample_rate": SR,
                "seed": self.seed, "domain": self.domains[0],
                "attributes": dict(self.attributes), "faults": faults,
                "fault": faults[0] if faults else None, "states": states, "events": events}


def synthesize_stream(out_wav: str | Path, machine: str, section: int = 0,
                      seconds: float = 120.0, fault_start: float = 60.0,
                      fault_seconds: float = 30.0, seed: int = 0, domain: str = "source",
                      fault_kind: str | None = None, severity: float | None = None, *,
                      fault_onset: str = "sudden", fault_ramp_s: float | None = None,
                      faults: Sequence[FaultSpec] | None = None,
                      domains: Sequence[str] | None = None,
                      options: StreamOptions | None = None, take: int = 0) -> dict:
    """Write one long recording of unit ``section`` of ``machine`` and its labels (the JSON
    beside it, docs/SYNTH.md "Stream labels"); return the labels.

    The unit is the one ``synthesize_dataset(seed=seed)`` writes for that section; it runs
    under the operating conditions of ``domains`` (default: ``domain`` alone), starting in one
    drawn from the first. ``options`` (default: nothing changes) says what the plant does to
    it (``StreamOptions.plant()``: everything on). ``faults`` lists the fault intervals
    (``[]``: an all-normal recording); None gives the one fault of the other arguments:
    [fault_start, fault_start + fault_seconds), ``fault_kind`` (default drawn), ``severity``
    (default drawn from 0.6-1.0), ``fault_onset``, ``fault_ramp_s``. ``take`` > 0 gives another
    recording of the same unit (all of its randomness but the unit drawn afresh).
    """
    machine_model(machine)
    out_wav = Path(out_wav)
    domains = _check_domains(domains if domains else (domain,))
    if not 0 <= section <= 99:
        raise BadInput(f"section {section}: give 0 to 99")
    if not 0 < seconds <= MAX_SECONDS:
        raise BadInput(f"seconds = {seconds}: give a length above 0 and at most "
                       f"{MAX_SECONDS:g} s (24 h)")
    if take < 0:
        raise BadInput(f"take {take}: give 0 or more")
    options = options or StreamOptions()
    options.check()
    if faults is None:
        faults = [FaultSpec(fault_start, fault_start + fault_seconds, fault_kind, severity,
                            fault_onset, fault_ramp_s)]
    stream = _Stream(machine, section, seconds, seed, domains, options, take, faults)
    try:
        stream.write(out_wav)
    finally:  # the blocks' spectra cached by length: megabytes each, not needed any more
        dsp.clear_caches()
    labels = stream.labels()
    text = json.dumps(labels, indent=2) + "\n"
    out_wav.with_suffix(".json").write_text(text)
    return json.loads(text)


# --------------------------------------------------------------------------------- transients

TRANSIENT_SECONDS = {"impact": (0.4, 0.9), "door": (0.6, 1.2), "speech": (1.5, 6.0),
                     "forklift": (5.0, 15.0)}


def _modes(rng: np.random.Generator, n: int, count: int, low_hz: float, high_hz: float,
           tau: tuple[float, float]) -> np.ndarray:
    """Decaying resonances (n,): what struck metal, wood or a panel rings like."""
    t = np.arange(n) / SR
    out = np.zeros(n)
    for f0, decay, amp, phase in zip(np.exp(rng.uniform(np.log(low_hz), np.log(high_hz), count)),
                                     rng.uniform(*tau, count), rng.uniform(0.3, 1.0, count),
                                     rng.uniform(0, 2 * np.pi, count), strict=True):
        out += amp * np.exp(-t / decay) * np.sin(2 * np.pi * f0 * t + phase)
    return out


def _struck(rng: np.random.Generator, n: int, low_hz: float, high_hz: float,
            tau: tuple[float, float]) -> np.ndarray:
    ring = _modes(rng, n, 4, low_hz, high_hz, tau)
    click = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.002 * SR))
    kernel = ring / max(np.max(np.abs(ring)), 1e-9) + 0.5 * click
    return kernel / np.max(np.abs(kernel))


def _impact(rng: np.random.Generator, n: int) -> np.ndarray:
    """A dropped part or a hammer blow: a ringing knock and a bounce or two; peak 4-14x the
    unit's RMS level."""
    kernel = _struck(rng, n, 300.0, 6000.0, (0.02, 0.25))
    out = kernel.copy()
    delay, amp = 0, 1.0
    for _ in range(min(int(rng.poisson(1.0)), 3)):
        delay += int(rng.uniform(0.05, 0.2) * SR)
        amp *= rng.uniform(0.3, 0.6)
        if delay >= n:
            break
        out[delay:] += amp * kernel[:n - delay]
    return out / np.max(np.abs(out)) * rng.uniform(4.0, 14.0) * _taper(n)


def _door(rng: np.random.Generator, n: int) -> np.ndarray:
    """A door slamming: a low thump, the panel ringing, the latch and a short rattle."""
    t = np.arange(n) / SR
    thump = np.exp(-t / rng.uniform(0.06, 0.12)) * np.sin(2 * np.pi * rng.uniform(40, 90) * t)
    panel = 0.5 * _modes(rng, n, 3, 120.0, 700.0, (0.05, 0.2))
    latch = _struck(rng, n, 1500.0, 5000.0, (0.005, 0.02))
    out = thump + panel
    delay = int(rng.uniform(0.005, 0.03) * SR)
    out[delay:] += rng.uniform(0.3, 0.8) * latch[:n - delay]
    for _ in range(int(rng.integers(2, 5))):
        delay = int(rng.uniform(0.05, 0.3) * SR)
        out[delay:] += rng.uniform(0.1, 0.3) * latch[:n - delay]
    return out / np.max(np.abs(out)) * rng.uniform(4.0, 12.0) * _taper(n)


VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410),
          (300, 870, 2240), (660, 1720, 2410))


def _speech(rng: np.random.Generator, n: int) -> np.ndarray:
    """Speech-like babble of 1-3 talkers: a glottal source through vowel formants, syllables
    at 3-6 per second with pauses; RMS 0.3-1x the unit's level."""
    out = np.zeros(n)
    for _ in range(1 + min(int(rng.poisson(0.7)), 2)):
        f0 = rng.uniform(95.0, 230.0)
        scale = rng.uniform(0.95, 1.2) if f0 > 160 else rng.uniform(0.85, 1.0)
        pitch = f0 * (1 + dsp.slow_walk(rng, n, 3.0, 0.08))
        source = dsp.periodic(dsp.cycles(pitch, n, rng.uniform()),
                              np.arange(1, 61) ** -1.0, fundamental_hz=float(pitch.max()))
        source = source / dsp.rms(source) + 0.15 * rng.standard_normal(n)
        talker = np.zeros(n)
        position = int(rng.uniform(0.0, 0.3) * SR)
        while position < n:
            length = min(int(rng.uniform(0.12, 0.3) * SR), n - position)
            if length < 64:
                break
            size = 1 << (length - 1).bit_length()
            freqs = np.fft.rfftfreq(size, 1.0 / SR)
            formants = np.array(VOWELS[int(rng.integers(len(VOWELS)))]) * scale
            formants = formants * rng.uniform(0.92, 1.08, 3)
            response = sum(gain / np.sqrt(1 + ((freqs - fc) / bw) ** 2) for fc, bw, gain in
                           zip(formants, (60.0, 90.0, 120.0), (1.0, 0.6, 0.3), strict=True))
            piece = source[position:position + length] * np.hanning(length)
            talker[position:position + length] += np.fft.irfft(
                np.fft.rfft(piece, size) * response, size)[:length]
            gap = rng.uniform(0.3, 0.8) if rng.uniform() < 0.15 else rng.uniform(0.02, 0.15)
            position += length + int(gap * SR)
        out += talker / dsp.rms(talker) * rng.uniform(0.5, 1.0)
    freqs = dsp.rfft_freqs(n)
    out = dsp.apply_response(out, 1 / np.sqrt(1 + (freqs / rng.uniform(2500, 5000)) ** 2))
    return out / dsp.rms(out) * rng.uniform(0.3, 1.0) * _taper(n)


def _forklift(rng: np.random.Generator, n: int) -> np.ndarray:
    """A forklift passing: engine firing harmonics, rumble and tyre noise, louder and
    Doppler-shifted up as it comes, down as it goes; RMS 0.5-2x the unit's level at its
    closest."""
    t = np.arange(n) / SR - n / SR * rng.uniform(0.4, 0.6)
    speed, closest = rng.uniform(1.5, 4.0), rng.uniform(1.5, 5.0)
    x = speed * t
    distance = np.sqrt(closest ** 2 + x ** 2)
    doppler = 343.0 / (343.0 + speed * x / distance)
    f0 = rng.uniform(22.0, 45.0)
    firing = f0 * (1 + dsp.slow_walk(rng, n, 0.5, 0.03)) * doppler
    engine = dsp.periodic(dsp.cycles(firing, n, rng.uniform()),
                          dsp.harmonic_amplitudes(60, rng.uniform(0.6, 1.1), rng, 6.0),
                          rng.uniform(0, 2 * np.pi, 60), fundamental_hz=float(firing.max()))
    freqs = dsp.rfft_freqs(n)
    engine = dsp.apply_response(engine, 1 / (1 + (freqs / rng.uniform(400, 1200)) ** 2))
    rumble = dsp.coloured_noise(rng, n, dsp.tilt_psd(freqs, 1.2, 60.0) * (freqs > 20))
    tyres = dsp.coloured_noise(rng, n, dsp.band_psd(freqs, rng.uniform(500, 1500), 1.0))
    out = (engine / dsp.rms(engine) + 0.5 * rumble + 0.3 * tyres) * closest / distance
    middle = np.argmin(distance)
    near = out[max(0, middle - SR // 2):middle + SR // 2]
    return out / dsp.rms(near) * rng.uniform(0.5, 2.0) * _taper(n, 0.5)


def _taper(n: int, seconds: float = 0.005) -> np.ndarray:
    """(n,) 1 with half-Hann ends of ``seconds``: a transient starts and ends at 0."""
    edge = min(int(seconds * SR), n // 2)
    window = np.ones(n)
    if edge:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(edge) + 0.5) / edge)
        window[:edge], window[n - edge:] = ramp, ramp[::-1]
    return window


TRANSIENT_RENDERERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "impact": _impact, "door": _door, "speech": _speech, "forklift": _forklift}


# --------------------------------------------------------------------------------- stream set

SET_FAULT_SECONDS = 240.0  # a fault stream's length (longer when the fault ends late)
SET_FAULT_START = (90.0, 150.0)  # the fault starts this far into it
SET_FAULT_LENGTH = (60.0, 120.0)  # and lasts this long
SET_TAIL_S = 30.0  # normal audio after the fault, at least


def _split(total: float, piece: float) -> list[float]:
    """``total`` seconds as pieces of ``piece`` and a shorter last one (at least 1 s)."""
    count, rest = int(total // piece), round(total % piece, 2)
    lengths = [piece] * count
    if rest >= 1.0:
        lengths.append(rest)
    elif lengths:
        lengths[-1] = round(lengths[-1] + rest, 2)
    return lengths


def synthesize_stream_set(out: str | Path, hours: float = 10.0,
                          machines: Sequence[str] = ("fan", "gearbox", "valve"),
                          sections: Sequence[int] = (0,), stream_minutes: float = 30.0,
                          faults_per_machine: int = 4, fault_severity: float = 1.0,
                          seed: int = 0, domains: Sequence[str] = ("source",),
                          options: StreamOptions | None = None, command: str | None = None,
                          progress: Callable[[str], None] | None = None) -> dict:
    """Write a test set of labelled streams under ``out`` and return its manifest.

    ``out/normal/``: all-normal streams under the plant's life (``options``, default
    ``PLANT``), ``hours`` of audio in all, spread evenly over ``machines`` and ``sections``, in
    streams of ``stream_minutes`` (the last of each unit shorter). ``out/faults/``: per machine
    type ``faults_per_machine`` streams of 240 s (longer when the fault ends late) with one
    fault starting after 90-150 s and lasting 60-120 s, of ``fault_severity``, kinds cycling
    over the machine's, onsets alternating sudden and gradual (a gradual ramp is 50-100 % of the
    fault), sections cycling. Each ``.wav`` has its ``.json`` labels; ``manifest.json`` and
    ``README.md`` list them with the command. The units are those of
    ``synthesize_dataset(seed=seed)``: train or enroll the bundle on that data set.
    """
    out = Path(out)
    machines = list(machines)
    for machine in machines:
        machine_model(machine)
    if not machines:
        raise BadInput("no machine types given; name at least one")
    sections = list(sections)
    if not sections or any(not 0 <= s <= 99 for s in sections) or len(set(sections)) < len(
            sections):
        raise BadInput(f"sections {sections}: give distinct section numbers 0 to 99")
    if not 0 < hours <= 1000:
        raise BadInput(f"hours = {hours:g}: give more than 0 and at most 1000")
    if not 0 < stream_minutes <= MAX_SECONDS / 60:
        raise BadInput(f"stream minutes = {stream_minutes:g}: give more than 0 and at most 1440")
    if faults_per_machine < 0:
        raise BadInput(f"faults per machine = {faults_per_machine}: give 0 or more")
    if not 0.0 <= fault_severity <= 2.0:
        raise BadInput(f"fault severity {fault_severity:g}: give a value from 0 (barely there) "
                       "to 2")
    domains = _check_domains(domains)
    options = options or PLANT
    options.check()
    say = progress or (lambda _text: None)
    jobs: list[dict[str, Any]] = []
    per_unit = hours * 3600 / (len(machines) * len(sections))
    for machine in machines:
        for section in sections:
            for index, length in enumerate(_split(per_unit, stream_minutes * 60)):
                jobs.append({"path": f"normal/{machine}_section_{section:02d}_normal_"
                                     f"{index:03d}.wav", "machine": machine,
                             "section": section, "seconds": length, "take": 1 + index,
                             "faults": []})
    for machine in machines:
        kinds = MODELS[machine].faults
        rng = np.random.default_rng([seed, MACHINE_TYPES.index(machine), 77, 1])
        for index in range(faults_per_machine):
            kind = kinds[index % len(kinds)]
            onset = ONSETS[(index + index // len(kinds)) % 2]
            start = round(float(rng.uniform(*SET_FAULT_START)), 2)
            length = round(float(rng.uniform(*SET_FAULT_LENGTH)), 2)
            ramp = round(float(rng.uniform(0.5, 1.0)) * length, 2)
            section = sections[index % len(sections)]
            seconds = max(SET_FAULT_SECONDS, math.ceil(start + length + SET_TAIL_S))
            jobs.append({"path": f"faults/{machine}_section_{section:02d}_fault_{index:02d}_"
                                 f"{kind}_{onset}.wav", "machine": machine, "section": section,
                         "seconds": float(seconds), "take": 1_000_001 + index,
                         "faults": [FaultSpec(start, round(start + length, 2), kind,
                                              fault_severity, onset,
                                              ramp if onset == "gradual" else None)]})
    out.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    began = time.process_time()
    wall = time.monotonic()
    total = sum(job["seconds"] for job in jobs)
    done = 0.0
    for number, job in enumerate(jobs, 1):
        clock = time.process_time()
        labels = synthesize_stream(out / job["path"], job["machine"], job["section"],
                                   job["seconds"], seed=seed, domains=domains, options=options,
                                   take=job["take"], faults=job["faults"])
        done += job["seconds"]
        used = time.process_time() - clock
        written.append({"path": job["path"], "labels": job["path"][:-4] + ".json",
                        "machine": job["machine"], "section": job["section"],
                        "seconds": job["seconds"], "take": job["take"],
                        "faults": labels["faults"],
                        "events": len(labels["events"]), "states": len(labels["states"])})
        say(f"[{number}/{len(jobs)}] {job['path']}: {job['seconds']:g} s in {used:.1f} s CPU "
            f"({done / 3600:.2f} of {total / 3600:.2f} h)")
    cpu = time.process_time() - began
    normal_s = sum(w["seconds"] for w in written if not w["faults"])
    manifest = {
        "format": "asd-edge-stream-set", "version": 1, "seed": seed,
        "command": command or _command(out, hours, machines, sections, stream_minutes,
                                       faults_per_machine, fault_severity, seed, domains),
        "train_with": f"asd-edge synth DATA --seed {seed}" + (
            f" --sections {max(sections) + 1}" if max(sections) >= 3 else ""),
        "machines": machines, "sections": sections, "domains": list(domains),
        "options": {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in options.__dict__.items()},
        "normal_seconds": round(normal_s, 2), "fault_seconds": round(done - normal_s, 2),
        "cpu_seconds": round(cpu, 1), "wall_seconds": round(time.monotonic() - wall, 1),
        "streams": written}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_readme(manifest))
    return manifest


def _command(out: Path, hours: float, machines: Sequence[str], sections: Sequence[int],
             stream_minutes: float, faults_per_machine: int, fault_severity: float, seed: int,
             domains: Sequence[str]) -> str:
    argv = ["asd-edge", "synth", str(out), "--stream-set", "--hours", f"{hours:g}",
            "--machines", ",".join(machines), "--sections", ",".join(map(str, sections)),
            "--stream-minutes", f"{stream_minutes:g}", "--faults-per-machine",
            str(faults_per_machine), "--fault-severity", f"{fault_severity:g}", "--seed",
            str(seed), "--domains", ",".join(domains)]
    return shlex.join(argv)


def _readme(manifest: dict) -> str:
    normal = [s for s in manifest["streams"] if not s["faults"]]
    faulty = [s for s in manifest["streams"] if s["faults"]]
    lines = [
        "# Synthetic stream test set", "",
        "Written by", "", "```", manifest["command"], "```", "",
        f"- `normal/`: {len(normal)} all-normal streams, {manifest['normal_seconds'] / 3600:.2f} h "
        "of healthy audio (false alarms per hour);",
        f"- `faults/`: {len(faulty)} streams with one labelled fault each, "
        f"{manifest['fault_seconds'] / 3600:.2f} h (faults caught, detection delay).", "",
        "Each `.wav` (16 kHz mono 16-bit) has its labels in the `.json` beside it "
        "(docs/SYNTH.md, \"Stream labels\"): the fault intervals, the operating states and the "
        "plant's events. `manifest.json` lists every stream.", "",
        "The units are sections of the synthetic data set of the same seed: train or enroll "
        "the bundle on", "", "```", manifest["train_with"], "```", "",
        f"(domains streamed: {', '.join(manifest['domains'])}; written in "
        f"{manifest['cpu_seconds']:.0f} s of CPU).", "",
        "| stream | machine | section | seconds | fault |", "|---|---|---|---|---|"]
    for stream in manifest["streams"]:
        fault = stream["faults"][0] if stream["faults"] else None
        text = (f"{fault['kind']} {fault['onset']} {fault['start_s']:g}-{fault['end_s']:g} s, "
                f"severity {fault['severity']:g}") if fault else "-"
        lines.append(f"| {stream['path']} | {stream['machine']} | {stream['section']} | "
                     f"{stream['seconds']:g} | {text} |")
    return "\n".join(lines) + "\n"
