"""The seven machine types: what a unit is, what its conditions do, how it sounds and fails.

A *unit* (one section) is drawn from the seed and the section: tooth and blade counts, shaft
speeds, bearing geometry, resonance frequencies. An *operating condition* is a set of
categorical attribute values, each mapped to physical quantities (speed, load, mic position);
the target domain uses values the source domain never has (two conditions per machine type,
as few training clips are given for it). ``render`` returns the machine's
sound (n,) at 16 kHz with an RMS near 1; background noise is added by the caller.

Signatures follow vibration-analysis practice: gear mesh at teeth x shaft speed with shaft
sidebands, bearing defect frequencies (BPFO, BPFI, BSF) exciting a housing resonance, blade-pass
tones, imbalance as a 1x component and amplitude modulation, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.synth import dsp
from edge.synth.faults import (
    Fault,
    amplitude_modulation,
    bearing_defect,
    hiss,
    periodic_impacts,
    rattle,
    squeal,
)

Unit = dict[str, Any]
Condition = dict[str, Any]  # physical quantities (floats; valve: its pattern name)
IMPACT = 12.0  # impulse scale: an impact of 1 * IMPACT rings about as loud as the machine


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute key: value (string) -> physical quantities, per domain."""

    key: str
    source: dict[str, dict[str, Any]]
    target: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class MachineModel:
    name: str
    attributes: tuple[AttributeSpec, ...]
    faults: tuple[str, ...]
    make_unit: Callable[[np.random.Generator], Unit]
    render: Callable[[Unit, Condition, int, np.random.Generator, Fault | None], np.ndarray]
    # the clip's background level is drawn in this range, in dB below the unit's nominal level
    # (quiet machines such as the valve, whose sound is mostly clicks, get higher values)
    snr_db: tuple[float, float]

    def values(self, domain: str) -> list[dict[str, dict[str, Any]]]:
        return [spec.source if domain == "source" else spec.target for spec in self.attributes]


def _bearing_frequencies(balls: int, ratio: float, angle_deg: float) -> dict[str, float]:
    """Defect frequencies as multiples of the shaft speed (outer race fixed)."""
    c = ratio * np.cos(np.radians(angle_deg))
    return {"bpfo": balls / 2 * (1 - c), "bpfi": balls / 2 * (1 + c),
            "bsf": 1 / (2 * ratio) * (1 - c * c), "ftf": 0.5 * (1 - c)}


def _rotation(rng: np.random.Generator, n: int, hz: float, wander: float = 0.003,
              offset: float = 0.006) -> np.ndarray:
    """A shaft speed trajectory (n,) Hz: the nominal, a per-clip offset, a slow wander."""
    return hz * (1 + rng.normal(0.0, offset)) * (1 + dsp.slow_walk(rng, n, 1.0, wander))


def _through(structure: dsp.Structure, excitation: np.ndarray,
             extra: np.ndarray | None = None) -> np.ndarray:
    response = structure.response(excitation.shape[0])
    if extra is not None:
        response = response * extra
    return dsp.apply_response(excitation, response)


def _mic(freqs: np.ndarray, distance: float, tilt_hz: float) -> np.ndarray:
    """A microphone position: farther away is quieter and duller (air absorption, shadowing)."""
    return 1.0 / distance / np.sqrt(1.0 + (freqs / tilt_hz) ** 2)


# ---------------------------------------------------------------------------------------- fan

def _fan_unit(rng: np.random.Generator) -> Unit:
    return {"blades": int(rng.integers(4, 10)), "shaft_hz": rng.uniform(14, 26),
            "aero_hz": rng.uniform(500, 2000), "bpf_decay": rng.uniform(0.8, 1.6),
            "bpf_amps": dsp.harmonic_amplitudes(12, 0.0, rng, 5.0),
            "structure": dsp.random_structure(rng, 4, 300, 6000),
            "bearing": _bearing_frequencies(int(rng.integers(7, 12)), rng.uniform(0.18, 0.3), 0),
            "tonal_gain": rng.uniform(0.4, 0.9)}


def _fan(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
         fault: Fault | None) -> np.ndarray:
    speed, load = cond["speed"], cond["load"]
    shaft = _rotation(rng, n, unit["shaft_hz"] * speed * (1 - 0.03 * load))
    shaft_phase = dsp.cycles(shaft, n, rng.uniform())
    bpf = unit["blades"] * shaft.max()
    decay = np.arange(1, 13) ** -(unit["bpf_decay"] - 0.2 * load)
    amps = dsp.shaped_harmonics(bpf, unit["bpf_amps"] * decay, unit["structure"].at)
    tonal = dsp.periodic(unit["blades"] * shaft_phase, amps, rng.uniform(0, 2 * np.pi, 12),
                         fundamental_hz=bpf)
    tonal = unit["tonal_gain"] * tonal / dsp.rms(tonal) * speed ** 2
    freqs = dsp.rfft_freqs(n)
    aero_centre = unit["aero_hz"] * speed * (1 - 0.25 * load)
    aero = dsp.coloured_noise(rng, n, dsp.band_psd(freqs, aero_centre, 1.0)
                              + 0.2 * dsp.tilt_psd(freqs, 1.0, 80))
    blade_wash = 1 + 0.15 * np.cos(2 * np.pi * unit["blades"] * shaft_phase)
    aero = aero * blade_wash * speed ** 2.5 * (1 + 0.4 * load)
    residual_imbalance = 0.03
    excitation = aero
    if fault is not None:
        kind = fault.kind
        if kind == "imbalance":
            depth = fault.level(0.05, 0.5)
            gain = amplitude_modulation(shaft_phase, depth, 1, fault.rng)
            tonal, excitation = tonal * gain, excitation * gain
            residual_imbalance += depth
        elif kind == "blade":  # a damaged blade: a pressure pulse once per revolution
            excitation = excitation + periodic_impacts(
                shaft_phase, fault.level(0.3, 2.5) * IMPACT * speed, fault.rng, spread=0.1)
        elif kind == "bearing":
            defect = dsp.cycles(shaft * unit["bearing"]["bpfo"], n)
            excitation = excitation + bearing_defect(
                defect, np.ones(n), fault.level(0.2, 2.0) * IMPACT, fault.rng)
        elif kind == "rub":
            gate = np.clip(amplitude_modulation(shaft_phase, 1.0, 1) - 1.0, 0, None)
            tonal = tonal + squeal(n, fault.rng, fault.level(0.1, 1.0), 1500, 5000, 1.5,
                                   gate=gate)
        elif kind == "clog":  # a clogged filter: less flow, the fan unloads and speeds up
            factor = fault.level(0.05, 0.35)
            excitation = excitation * (1 - factor) + factor * hiss(
                n, fault.rng, 1.5, aero_centre * 2.2, 0.5)
    one_x = residual_imbalance * np.cos(2 * np.pi * shaft_phase) * 3.0
    return tonal + _through(unit["structure"], excitation) + one_x


FAN = MachineModel(
    "fan",
    (AttributeSpec("m-n",
                   {"W": {"speed": 1.0, "load": 0.0}, "X": {"speed": 1.07, "load": 0.4},
                    "Y": {"speed": 0.94, "load": 0.8}},
                   {"Z": {"speed": 1.18, "load": 0.2}, "V": {"speed": 0.86, "load": 1.2}}),),
    ("imbalance", "blade", "bearing", "rub", "clog"), _fan_unit, _fan, (-1.0, 1.0))


# ------------------------------------------------------------------------------------ gearbox

def _gearbox_unit(rng: np.random.Generator) -> Unit:
    return {"z1": int(rng.integers(12, 31)), "z2": int(rng.integers(33, 71)),
            "hz_per_volt": rng.uniform(6, 11), "segments": int(rng.choice([3, 5, 7])),
            "mesh_amps": dsp.harmonic_amplitudes(10, 1.0, rng, 5.0),
            "structure": dsp.random_structure(rng, 5, 500, 6000, (8, 40)),
            "bearing": _bearing_frequencies(int(rng.integers(7, 12)), rng.uniform(0.2, 0.3), 10),
            "sideband": rng.uniform(0.05, 0.15)}


def _gearbox(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
             fault: Fault | None) -> np.ndarray:
    load = cond["weight"] / 100.0
    input_hz = _rotation(rng, n, unit["hz_per_volt"] * cond["volt"] * (1 - 0.06 * load))
    input_phase = dsp.cycles(input_hz, n, rng.uniform())
    output_phase = input_phase * unit["z1"] / unit["z2"] + rng.uniform()
    mesh_phase = input_phase * unit["z1"]
    mesh_hz = unit["z1"] * input_hz.max()
    mesh_amps = unit["mesh_amps"].copy()
    sideband = unit["sideband"] * (1 + 0.5 * load)
    excitation_gain = 1.0
    if fault is not None and fault.kind == "wear":  # worn flanks: higher mesh harmonics
        wear = fault.level(0.15, 1.5)
        mesh_amps[1:] *= 1 + wear * fault.rng.uniform(0.5, 1.0, mesh_amps.shape[0] - 1)
        sideband *= 1 + wear
        excitation_gain += 0.5 * wear
    amps = dsp.shaped_harmonics(mesh_hz, mesh_amps, unit["structure"].at)
    mesh = dsp.periodic(mesh_phase, amps, rng.uniform(0, 2 * np.pi, 10), fundamental_hz=mesh_hz)
    modulation = (1 + sideband * np.cos(2 * np.pi * input_phase)
                  + 0.5 * sideband * np.cos(2 * np.pi * output_phase))
    mesh = mesh / dsp.rms(mesh) * modulation * (0.6 + 0.4 * load)
    motor_hz = input_hz.max() * unit["segments"] * 2
    brush = dsp.periodic(input_phase * unit["segments"] * 2,
                         dsp.harmonic_amplitudes(6, 1.2, rng, 3.0), fundamental_hz=motor_hz)
    brush = 0.3 * brush / dsp.rms(brush)
    freqs = dsp.rfft_freqs(n)
    friction = dsp.coloured_noise(rng, n, dsp.tilt_psd(freqs, 0.7, 300)) * (0.4 + 0.3 * load)
    friction = friction * (1 + 0.3 * np.cos(2 * np.pi * mesh_phase))
    excitation = friction * excitation_gain
    if fault is not None:
        if fault.kind == "chipped":  # a chipped tooth on the input pinion
            excitation = excitation + periodic_impacts(
                input_phase, fault.level(0.3, 3.0) * IMPACT * (0.5 + load), fault.rng,
                offset=fault.rng.uniform())
            mesh = mesh * amplitude_modulation(input_phase, fault.level(0.02, 0.2), 3)
        elif fault.kind == "bearing":
            defect = dsp.cycles(input_hz * unit["bearing"]["bpfi"], n)
            load_zone = 0.5 + 0.5 * np.cos(2 * np.pi * input_phase)
            excitation = excitation + bearing_defect(
                defect, load_zone, fault.level(0.15, 1.5) * IMPACT, fault.rng)
        elif fault.kind == "loose":
            excitation = excitation + rattle(n, fault.rng, fault.level(0.25, 2.0) * IMPACT,
                                             fault.rng.uniform(3, 12))
    return mesh + brush + _through(unit["structure"], excitation)


GEARBOX = MachineModel(
    "gearbox",
    (AttributeSpec("volt", {"1.0": {"volt": 1.0}, "1.5": {"volt": 1.5}, "2.0": {"volt": 2.0}},
                   {"1.3": {"volt": 1.3}, "2.5": {"volt": 2.5}}),
     AttributeSpec("wt", {"0": {"weight": 0.0}, "50": {"weight": 50.0},
                          "100": {"weight": 100.0}},
                   {"150": {"weight": 150.0}})),
    ("chipped", "wear", "bearing", "loose"), _gearbox_unit, _gearbox, (2.0, 4.0))


# ------------------------------------------------------------------------------------ bearing

def _bearing_unit(rng: np.random.Generator) -> Unit:
    return {"geometry": _bearing_frequencies(int(rng.integers(7, 15)), rng.uniform(0.15, 0.3),
                                             rng.uniform(0, 15)),
            "hz_per_vel": rng.uniform(1.2, 2.2), "housing": rng.uniform(1500, 5500),
            "structure": dsp.random_structure(rng, 4, 800, 7000, (10, 40)),
            "rig_hz": rng.uniform(40, 90), "rig_amps": dsp.harmonic_amplitudes(30, 1.0, rng)}


def _bearing(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
             fault: Fault | None) -> np.ndarray:
    shaft_hz = _rotation(rng, n, unit["hz_per_vel"] * cond["vel"])
    shaft_phase = dsp.cycles(shaft_hz, n, rng.uniform())
    geometry = unit["geometry"]
    cage_phase = shaft_phase * geometry["ftf"]
    freqs = dsp.rfft_freqs(n)
    speed = cond["vel"] / 12.0
    # rolling noise: broadband, loudest around the housing resonance, breathing with the cage
    rolling = dsp.coloured_noise(rng, n, dsp.band_psd(freqs, unit["housing"], 0.8)
                                 + 0.3 * dsp.tilt_psd(freqs, 1.0, 200))
    rolling = rolling * (1 + 0.1 * np.cos(2 * np.pi * cage_phase)) * speed
    shaft = dsp.periodic(shaft_phase, np.array([1.0, 0.5, 0.2, 0.1]), fundamental_hz=40)
    rig = dsp.periodic(dsp.cycles(unit["rig_hz"], n, rng.uniform()),
                       dsp.shaped_harmonics(unit["rig_hz"], unit["rig_amps"],
                                            unit["structure"].at), fundamental_hz=unit["rig_hz"])
    tonal = 0.4 * shaft / dsp.rms(shaft) * speed + 0.5 * rig / dsp.rms(rig)
    excitation = rolling
    if fault is not None:
        amplitude = fault.level(0.2, 2.0) * IMPACT * speed
        if fault.kind == "outer":
            defect = dsp.cycles(shaft_hz * geometry["bpfo"], n)
            excitation = excitation + bearing_defect(defect, np.ones(n), amplitude, fault.rng)
        elif fault.kind == "inner":
            defect = dsp.cycles(shaft_hz * geometry["bpfi"], n)
            zone = 0.3 + 0.7 * np.clip(np.cos(2 * np.pi * shaft_phase), 0, None)
            excitation = excitation + bearing_defect(defect, zone, amplitude, fault.rng)
        elif fault.kind == "ball":
            defect = dsp.cycles(shaft_hz * geometry["bsf"] * 2, n)
            zone = 0.3 + 0.7 * np.clip(np.cos(2 * np.pi * cage_phase), 0, None)
            excitation = excitation + bearing_defect(defect, zone, amplitude, fault.rng)
        elif fault.kind == "dry":  # lubrication lost: rough, hissier rolling and some squeal
            excitation = excitation * (1 + fault.level(0.08, 0.6))
            tonal = tonal + squeal(n, fault.rng, fault.level(0.03, 0.3), 2000, 6000, 1.0)
    housing = dsp.Structure((unit["housing"],), (15.0,), (1.0,), 0.3)
    response = housing.response(n) * unit["structure"].response(n) * _mic(
        freqs, cond["distance"], cond["tilt_hz"])
    return tonal / cond["distance"] + dsp.apply_response(excitation, response)


BEARING = MachineModel(
    "bearing",
    (AttributeSpec("vel", {"8": {"vel": 8.0}, "12": {"vel": 12.0}, "16": {"vel": 16.0}},
                   {"6": {"vel": 6.0}, "20": {"vel": 20.0}}),
     AttributeSpec("loc", {"A": {"distance": 1.0, "tilt_hz": 6000.0},
                           "B": {"distance": 1.3, "tilt_hz": 4000.0}},
                   {"C": {"distance": 1.7, "tilt_hz": 3000.0}})),
    ("outer", "inner", "ball", "dry"), _bearing_unit, _bearing, (-1.0, 1.0))


# ------------------------------------------------------------------------------------- slider

def _slider_unit(rng: np.random.Generator) -> Unit:
    return {"pitch_mm": rng.uniform(5, 20), "stroke_mm": rng.uniform(150, 350),
            "dwell_s": rng.uniform(0.15, 0.5), "balls": int(rng.integers(4, 9)),
            "pwm_hz": rng.uniform(2500, 6000),
            "structure": dsp.random_structure(rng, 4, 400, 5000, (6, 30)),
            "screw_amps": dsp.harmonic_amplitudes(16, 0.8, rng)}


def _slider_motion(unit: Unit, cond: Condition, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoidal back-and-forth motion: velocity (n,) mm/s (signed) and position (n,) mm."""
    vmax, accel = cond["vel"], cond["ac"] * 9810.0  # mm/s, mm/s^2
    stroke = unit["stroke_mm"]
    ramp_s = vmax / accel
    if accel * ramp_s ** 2 > stroke:  # never reaches full speed
        ramp_s = np.sqrt(stroke / accel)
        vmax = accel * ramp_s
    cruise_s = max(stroke / vmax - ramp_s, 0.0)
    stroke_s = 2 * ramp_s + cruise_s
    period = 2 * (stroke_s + unit["dwell_s"])
    t = (np.arange(n) / dsp.SR + rng.uniform(0, period)) % period
    half = np.where(t < period / 2, 1.0, -1.0)
    local = t % (period / 2)
    speed = np.where(local < ramp_s, accel * local,
                     np.where(local < ramp_s + cruise_s, vmax,
                              np.maximum(vmax - accel * (local - ramp_s - cruise_s), 0.0)))
    speed = np.where(local < stroke_s, speed, 0.0)
    velocity = half * speed * (1 + dsp.slow_walk(rng, n, 2.0, 0.01))
    position = np.cumsum(velocity) / dsp.SR
    return velocity, position - position.min()


def _slider(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
            fault: Fault | None) -> np.ndarray:
    velocity, position = _slider_motion(unit, cond, n, rng)
    speed = np.abs(velocity)
    moving = np.clip(speed / 50.0, 0, 1)
    screw_hz = speed / unit["pitch_mm"]  # screw revolutions per second
    screw_phase = dsp.cycles(screw_hz * unit["balls"], n)
    top_hz = cond["vel"] / unit["pitch_mm"] * unit["balls"] * 1.05
    tone = dsp.periodic(screw_phase, dsp.shaped_harmonics(top_hz, unit["screw_amps"],
                                                          unit["structure"].at),
                        fundamental_hz=top_hz)
    relative = speed / 600.0
    tone = 0.7 * tone / dsp.rms(tone) * relative
    pwm = dsp.periodic(dsp.cycles(unit["pwm_hz"], n), np.array([1.0, 0.3]),
                       fundamental_hz=unit["pwm_hz"]) * 0.15 * (0.3 + moving)
    freqs = dsp.rfft_freqs(n)
    rolling = dsp.coloured_noise(rng, n, dsp.tilt_psd(freqs, 0.5, 400)) * relative * 1.2
    accel = np.abs(np.gradient(velocity)) * dsp.SR / 9810.0
    # a start or a stop of the carriage jolts the frame
    jerk_events = np.flatnonzero(np.diff((moving > 0.5).astype(np.int8)) != 0) + 1
    excitation = rolling + dsp.impulses(n, jerk_events, 0.3 * IMPACT * cond["ac"] / 0.2)
    if fault is not None:
        if fault.kind == "stickslip":
            slips = rattle(n, fault.rng, fault.level(0.3, 2.0) * IMPACT,
                           fault.rng.uniform(10, 40), gate=moving * (accel < 0.05))
            excitation = excitation + slips
            excitation = excitation * (1 + fault.level(0.1, 0.8) * np.sign(
                np.sin(2 * np.pi * dsp.cycles(fault.rng.uniform(8, 25), n))) * moving)
        elif fault.kind == "rail":  # a pitted stretch of rail: rough rolling, a knock at its edge
            start = fault.rng.uniform(0.1, 0.7) * unit["stroke_mm"]
            length = fault.rng.uniform(0.05, 0.25) * unit["stroke_mm"]
            on_pits = ((position >= start) & (position < start + length)).astype(np.float64)
            rough = dsp.coloured_noise(fault.rng, n, dsp.tilt_psd(freqs, 0.3, 800))
            excitation = excitation + rough * on_pits * relative * fault.level(0.3, 2.5)
            edges = dsp.crossings((position - start) / unit["stroke_mm"] + 1.0)
            excitation = excitation + dsp.impulses(n, edges, fault.level(0.3, 3.0) * IMPACT)
        elif fault.kind == "loose":
            gate = np.clip(accel / max(cond["ac"], 1e-3), 0, 1)
            excitation = excitation + rattle(n, fault.rng, fault.level(0.2, 1.8) * IMPACT,
                                             30.0, gate=gate)
        elif fault.kind == "dry":
            tone = tone + squeal(n, fault.rng, fault.level(0.04, 0.4), 1000, 4000, 3.0,
                                 gate=moving)
            excitation = excitation * (1 + fault.level(0.1, 0.6) * moving)
    return tone + pwm + _through(unit["structure"], excitation)


SLIDER = MachineModel(
    "slider",
    (AttributeSpec("vel", {"500": {"vel": 500.0}, "600": {"vel": 600.0}, "700": {"vel": 700.0}},
                   {"400": {"vel": 400.0}, "850": {"vel": 850.0}}),
     AttributeSpec("ac", {"0.10": {"ac": 0.10}, "0.20": {"ac": 0.20}},
                   {"0.30": {"ac": 0.30}})),
    ("stickslip", "rail", "loose", "dry"), _slider_unit, _slider, (2.0, 4.0))


# -------------------------------------------------------------------------------------- valve

VALVE_PATTERNS: dict[str, tuple[tuple[float, float], ...]] = {
    # (open, closed) durations as fractions of the unit's base period, repeated
    "00": ((0.5, 0.5),),
    "01": ((0.2, 0.3), (0.2, 0.8)),
    "02": ((0.8, 0.4),),
    "03": ((0.15, 0.15), (0.15, 0.15), (0.4, 0.9)),
    "04": ((1.2, 0.3),),
}


def _valve_unit(rng: np.random.Generator) -> Unit:
    return {"period_s": rng.uniform(0.5, 1.1),
            "structure": dsp.random_structure(rng, 3, 1200, 7000, (15, 60), floor=0.05),
            "flow_hz": rng.uniform(1500, 5000), "pump_hz": rng.uniform(20, 50),
            "pump_amps": dsp.harmonic_amplitudes(40, 0.9, rng),
            "click_ratio": rng.uniform(0.5, 1.0)}


def _valve(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
           fault: Fault | None) -> np.ndarray:
    pattern = VALVE_PATTERNS[cond["pattern"]]
    period = unit["period_s"]
    durations = np.array([d for pair in pattern for d in pair]) * period
    cycle = durations.sum()
    repeats = int(n / dsp.SR / cycle) + 3
    segment = np.tile(durations, repeats) * (1 + rng.normal(0, 0.01, durations.shape[0] * repeats))
    open_stretch = 0.0
    bounce, bounce_delay = 0.0, np.zeros(0, dtype=np.int64)
    if fault is not None and fault.kind == "timing":  # a sticking spool: opens late, closes late
        open_stretch = fault.level(0.05, 0.5) * fault.rng.choice([-1.0, 1.0])
        segment[0::2] *= 1 + open_stretch
    edges = np.cumsum(segment) - rng.uniform(0, cycle)
    edges = np.rint(edges * dsp.SR).astype(np.int64)
    opens, closes = edges[0::2], edges[1::2]
    is_open = np.zeros(n)
    starts = np.clip(opens, 0, n)
    ends = np.clip(closes, 0, n)
    delta = np.zeros(n + 1)
    np.add.at(delta, starts, 1.0)
    np.add.at(delta, ends, -1.0)
    is_open = np.clip(np.cumsum(delta)[:n], 0, 1)
    flow_gate = np.convolve(is_open, np.ones(320) / 320, mode="same")
    freqs = dsp.rfft_freqs(n)
    flow = dsp.coloured_noise(rng, n, dsp.band_psd(freqs, unit["flow_hz"], 0.9)) * 0.25
    leak = 0.0
    click_amp = 1.0
    if fault is not None:
        if fault.kind == "leak":
            leak = fault.level(0.05, 0.6)
        elif fault.kind == "bounce":  # a weak return spring: the spool bounces on closing
            bounce = fault.level(0.3, 1.0)
            # chatter: two to four bounces, each about half the one before
            gaps = fault.rng.uniform(0.004, 0.02, (closes.shape[0], 4)).cumsum(axis=1)
            bounce_delay = np.rint(gaps * dsp.SR).astype(np.int64)
        elif fault.kind == "weak":  # contamination: softer, damped clicks
            click_amp = 1 - fault.level(0.1, 0.7)
            flow = flow * (0.5 + 0.5 * click_amp)  # a partly blocked orifice passes less
    flow = flow * (flow_gate + leak)
    clicks = (dsp.impulses(n, opens, IMPACT * 0.6 * click_amp)
              + dsp.impulses(n, closes, IMPACT * 0.6 * unit["click_ratio"] * click_amp))
    if bounce > 0:
        heights = bounce * 0.5 ** np.arange(4)
        clicks = clicks + dsp.impulses(n, (closes[:, None] + bounce_delay).ravel(),
                                       (IMPACT * 0.6 * heights[None, :]).repeat(
                                           closes.shape[0], axis=0).ravel())
    pump = dsp.periodic(dsp.cycles(unit["pump_hz"], n, rng.uniform()), unit["pump_amps"],
                        fundamental_hz=unit["pump_hz"])
    pump = 0.15 * pump / dsp.rms(pump)
    response = unit["structure"].response(n)
    if click_amp < 1:
        response = response * (1 / np.sqrt(1 + (freqs / 2500.0) ** 2)) ** (1 - click_amp)
    return pump + flow + dsp.apply_response(clicks, response)


VALVE = MachineModel(
    "valve",
    (AttributeSpec("pat", {"00": {"pattern": "00"}, "01": {"pattern": "01"},
                           "02": {"pattern": "02"}},
                   {"03": {"pattern": "03"}, "04": {"pattern": "04"}}),),
    ("timing", "leak", "bounce", "weak"), _valve_unit, _valve, (10.0, 12.0))


# ----------------------------------------------------------------------------- ToyCar, ToyTrain

def _toy_unit(rng: np.random.Generator) -> Unit:
    return {"hz_per_volt": rng.uniform(4, 8), "segments": int(rng.choice([3, 5])),
            "gear_teeth": int(rng.integers(8, 16)), "ratio": rng.uniform(6, 14),
            "structure": dsp.random_structure(rng, 4, 400, 6000, (5, 25)),
            "motor_amps": dsp.harmonic_amplitudes(24, 0.7, rng),
            "gear_amps": dsp.harmonic_amplitudes(8, 1.0, rng),
            "rail_m": rng.uniform(0.12, 0.3), "wheel_m": rng.uniform(0.04, 0.08),
            "belt_hz": rng.uniform(600, 2500)}


def _toy(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
         fault: Fault | None, train: bool) -> np.ndarray:
    structure = unit["structure"].shifted(cond.get("body", 1.0))
    motor_hz = _rotation(rng, n, unit["hz_per_volt"] * cond["volt"] * (1 - 0.05 * cond["mass"]),
                         wander=0.005, offset=0.008)
    motor_phase = dsp.cycles(motor_hz, n, rng.uniform())
    top = motor_hz.max()
    commutator = dsp.periodic(motor_phase * unit["segments"] * 2,
                              dsp.shaped_harmonics(top * unit["segments"] * 2,
                                                   unit["motor_amps"], structure.at),
                              fundamental_hz=top * unit["segments"] * 2)
    gear = dsp.periodic(motor_phase * unit["gear_teeth"],
                        dsp.shaped_harmonics(top * unit["gear_teeth"], unit["gear_amps"],
                                             structure.at), fundamental_hz=top * unit["gear_teeth"])
    wheel_phase = motor_phase / unit["ratio"]
    level = cond["volt"] / 10.0
    tonal = (0.5 * commutator / dsp.rms(commutator) + 0.4 * gear / dsp.rms(gear)) * level
    freqs = dsp.rfft_freqs(n)
    running = dsp.coloured_noise(rng, n, dsp.band_psd(freqs, unit["belt_hz"], 1.2)
                                 + 0.2 * dsp.tilt_psd(freqs, 1.0, 100))
    running = running * (1 + 0.1 * np.cos(2 * np.pi * wheel_phase)) * level * 0.8
    excitation = running
    if train:
        # wheel over rail joints: a click per joint for each axle of each car
        distance_phase = wheel_phase * np.pi * unit["wheel_m"] / unit["rail_m"]
        joints = dsp.crossings(distance_phase)
        axle_delays = np.rint(np.arange(2 * int(cond["cars"])) * 0.07 * dsp.SR /
                              max(cond["volt"] / 8, 0.3)).astype(np.int64)
        positions = (joints[:, None] + axle_delays[None, :]).ravel()
        excitation = excitation + dsp.impulses(n, positions, 0.5 * IMPACT * level)
    if fault is not None:
        if fault.kind == "tyre":  # damaged tyre or flat wheel: a knock each wheel turn
            excitation = excitation + periodic_impacts(
                wheel_phase, fault.level(0.3, 3.0) * IMPACT * level, fault.rng,
                offset=fault.rng.uniform())
        elif fault.kind == "gear":
            excitation = excitation + periodic_impacts(
                motor_phase / 2, fault.level(0.15, 1.5) * IMPACT * level, fault.rng)
        elif fault.kind == "shaft":  # bent shaft: the wheel wobbles
            gain = amplitude_modulation(wheel_phase, fault.level(0.1, 0.8), 2, fault.rng)
            tonal, excitation = tonal * gain, excitation * gain
        elif fault.kind == "brush":  # worn brushes: sparking crackle
            sparks = dsp.poisson_times(fault.rng, n, fault.level(10, 150))
            excitation = excitation + dsp.impulses(
                n, sparks, fault.rng.lognormal(0, 0.7, sparks.shape[0]) * IMPACT * 0.15 * level)
            tonal = tonal + hiss(n, fault.rng, fault.level(0.04, 0.4) * level, 5000, 0.5)
        elif fault.kind == "rattle":  # loose coupling or body part
            excitation = excitation + rattle(n, fault.rng, fault.level(0.25, 2.5) * IMPACT * level,
                                             fault.rng.uniform(4, 15))
    mic = _mic(freqs, cond["distance"], cond["tilt_hz"])
    return tonal / cond["distance"] + _through(structure, excitation, mic)


def _toycar(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
            fault: Fault | None) -> np.ndarray:
    return _toy(unit, cond, n, rng, fault, train=False)


def _toytrain(unit: Unit, cond: Condition, n: int, rng: np.random.Generator,
              fault: Fault | None) -> np.ndarray:
    return _toy(unit, cond, n, rng, fault, train=True)


_TOY_MIC = AttributeSpec("mic", {"1": {"distance": 1.0, "tilt_hz": 7000.0},
                                 "2": {"distance": 1.4, "tilt_hz": 4000.0}},
                         {"3": {"distance": 1.9, "tilt_hz": 2500.0}})

TOYCAR = MachineModel(
    "ToyCar",
    (AttributeSpec("car", {"A1": {"mass": 0.0, "body": 1.0}, "A2": {"mass": 0.5, "body": 0.96},
                           "B1": {"mass": 1.0, "body": 1.05}},
                   {"C1": {"mass": 1.6, "body": 0.9}}),
     AttributeSpec("spd", {"28V": {"volt": 2.8 * 3}, "31V": {"volt": 3.1 * 3},
                           "34V": {"volt": 3.4 * 3}},
                   {"25V": {"volt": 2.5 * 3}, "37V": {"volt": 3.7 * 3}}),
     _TOY_MIC),
    ("tyre", "gear", "shaft", "brush"), _toy_unit, _toycar, (3.0, 5.0))

TOYTRAIN = MachineModel(
    "ToyTrain",
    (AttributeSpec("car", {"A": {"cars": 1, "mass": 0.0}, "B": {"cars": 2, "mass": 0.6},
                           "C": {"cars": 3, "mass": 1.2}},
                   {"D": {"cars": 4, "mass": 1.8}}),
     AttributeSpec("spd", {"7": {"volt": 7.0}, "8": {"volt": 8.0}, "9": {"volt": 9.0}},
                   {"6": {"volt": 6.0}, "10": {"volt": 10.0}}),
     _TOY_MIC),
    ("tyre", "gear", "rattle", "brush"), _toy_unit, _toytrain, (6.0, 8.0))


MODELS: dict[str, MachineModel] = {m.name: m for m in
                                   (TOYCAR, TOYTRAIN, FAN, GEARBOX, BEARING, SLIDER, VALVE)}
