"""``asd-edge synth``: synthetic machine sounds in the DCASE layout, one long labelled stream
(``--stream``), or a test set of them (``--stream-set``)."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from edge.dataset import MACHINE_TYPES
from edge.errors import BadInput
from edge.synth import (
    FaultSpec,
    StreamOptions,
    synthesize_dataset,
    synthesize_stream,
    synthesize_stream_set,
)
from edge.synth.stream import PLANT

SET_MACHINES = "fan,gearbox,valve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="data-set folder; with --stream a .wav path or a folder; "
                                    "with --stream-set a folder")
    parser.add_argument("--machines", default=None,
                        help="comma-separated machine types or 'all' "
                             f"({','.join(MACHINE_TYPES)}); default all, with --stream-set "
                             f"{SET_MACHINES}")
    parser.add_argument("--sections", default=None,
                        help="units per machine type (default 3); with --stream-set the "
                             "comma-separated section numbers to stream (default 0)")
    parser.add_argument("--train", type=int, default=100,
                        help="source-domain normal training clips per section")
    parser.add_argument("--target-train", type=int, default=10,
                        help="target-domain normal training clips per section")
    parser.add_argument("--test", type=int, default=10,
                        help="test clips per section, domain and label (4x this in all)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="clip length (default 10 s, 12 s for ToyCar/ToyTrain); "
                             "with --stream the recording's length (default 120 s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")
    parser.add_argument("--snr", type=float, default=None, metavar="DB",
                        help="data set: every clip's plant background at this signal-to-noise "
                             "ratio (the noisy benchmark: 6, 0, -6) instead of one drawn from "
                             "the machine type's range")
    parser.add_argument("--stream", action="store_true",
                        help="write one long recording of one unit with a fault in it")
    parser.add_argument("--machine", help="with --stream: the machine type")
    parser.add_argument("--section", type=int, default=0, help="with --stream: the unit")
    parser.add_argument("--domain", choices=("source", "target"), default="source",
                        help="with --stream: which domain's operating condition")
    parser.add_argument("--fault-start", type=float, default=60.0, help="seconds")
    parser.add_argument("--fault-seconds", type=float, default=30.0, help="seconds")
    parser.add_argument("--fault-severity", type=float, default=None,
                        help="with --stream: fault strength, 0 (barely there) to 1 (obvious), "
                             "up to 2; default drawn from 0.6-1.0")
    parser.add_argument("--fault-kind", default=None,
                        help="with --stream: the fault (default: drawn from the machine's kinds)")
    parser.add_argument("--fault-onset", default="sudden",
                        help="with --stream: 'sudden' (50 ms fade) or 'gradual' (severity grows "
                             "from 0 over --fault-ramp-seconds)")
    parser.add_argument("--fault-ramp-seconds", type=float, default=None,
                        help="with --fault-onset gradual: the ramp (default drawn from "
                             "60-300 s, at most the fault's length)")
    parser.add_argument("--no-fault", action="store_true",
                        help="with --stream: an all-normal recording (labels: faults [])")
    parser.add_argument("--take", type=int, default=0,
                        help="with --stream: another recording of the same unit (0, 1, 2, ...)")
    life = parser.add_argument_group(
        "plant life (--stream, --stream-set)",
        "what a plant does to a healthy unit over hours; each is off for --stream unless "
        "given or --plant is; --stream-set uses --plant's defaults")
    life.add_argument("--plant", action="store_true",
                      help="turn all of the below on at their defaults")
    life.add_argument("--domains", default=None,
                      help="domains whose conditions the unit moves between: source, target "
                           "or source,target (default: --domain)")
    life.add_argument("--state-seconds", default=None, metavar="MIN,MAX",
                      help=f"a condition lasts MIN-MAX s (--plant: "
                           f"{_pair_text(PLANT.state_seconds)})")
    life.add_argument("--ramp-seconds", default=None, metavar="MIN,MAX",
                      help="half of the changes are steps, half ramps (cross-fades) of MIN-MAX s "
                           f"(default {_pair_text(PLANT.ramp_seconds)})")
    life.add_argument("--drift-db", type=float, default=None,
                      help=f"slow level drift within +-DB (--plant: {PLANT.drift_db:g})")
    life.add_argument("--background-changes-per-hour", type=float, default=None,
                      help="background level steps of 2-5 dB (--plant: "
                           f"{PLANT.background_changes_per_hour:g})")
    life.add_argument("--other-machine-per-hour", type=float, default=None,
                      help="runs of 1-5 min of another machine nearby (--plant: "
                           f"{PLANT.other_machine_per_hour:g})")
    life.add_argument("--transients-per-hour", type=float, default=None,
                      help="impacts, door slams, speech, forklifts (--plant: "
                           f"{PLANT.transients_per_hour:g})")
    life.add_argument("--splices-per-hour", type=float, default=None,
                      help=f"jumps to a fresh rendering, with a click (--plant: "
                           f"{PLANT.splices_per_hour:g})")
    test_set = parser.add_argument_group("test set (--stream-set)")
    test_set.add_argument("--stream-set", action="store_true",
                          help="write OUT/normal/ (all-normal streams) and OUT/faults/ "
                               "(labelled fault streams) with OUT/README.md and manifest.json")
    test_set.add_argument("--hours", type=float, default=10.0,
                          help="hours of normal audio in all (default 10)")
    test_set.add_argument("--stream-minutes", type=float, default=30.0,
                          help="length of each normal stream (default 30)")
    test_set.add_argument("--faults-per-machine", type=int, default=4,
                          help="fault streams per machine type (default 4)")


def _pair_text(pair: tuple[float, float] | None) -> str:
    return "off" if pair is None else f"{pair[0]:g},{pair[1]:g}"


def _pair(flag: str, text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as err:
        raise BadInput(f"{flag} {text!r}: give MIN,MAX in seconds, e.g. 30,120") from err
    return low, high


def options_from(args: argparse.Namespace, plant: bool = False) -> StreamOptions:
    """The plant life the flags ask for: --plant's defaults or off, each flag overriding."""
    options = PLANT if plant or args.plant else StreamOptions()
    changes: dict = {}
    if args.state_seconds is not None:
        changes["state_seconds"] = _pair("--state-seconds", args.state_seconds)
    if args.ramp_seconds is not None:
        changes["ramp_seconds"] = _pair("--ramp-seconds", args.ramp_seconds)
    for name in ("drift_db", "background_changes_per_hour", "other_machine_per_hour",
                 "transients_per_hour", "splices_per_hour"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    options = StreamOptions(**{**options.__dict__, **changes})
    options.check()
    return options


def _domains(domains: str | None, domain: str) -> list[str]:
    """The domains of --domains, or the one of --domain when it is not given."""
    text = domains if domains is not None else domain
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(d not in ("source", "target") for d in names) or len(
            set(names)) < len(names):
        raise BadInput(f"--domains {text!r}: use source, target or source,target")
    return names


def _section_list(text: str | None) -> list[int]:
    try:
        sections = [int(part) for part in (text or "0").split(",") if part.strip()]
    except ValueError as err:
        raise BadInput(f"--sections {text!r}: with --stream-set give section numbers, "
                       "e.g. 0 or 0,1,2") from err
    if not sections or any(not 0 <= s <= 99 for s in sections):
        raise BadInput(f"--sections {text!r}: give section numbers 0 to 99")
    return sections


def _section_count(text: str | None) -> int:
    try:
        return int(text) if text is not None else 3
    except ValueError as err:
        raise BadInput(f"--sections {text!r}: give the number of units per machine type, "
                       "e.g. 3") from err


def _machines(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(MACHINE_TYPES)
    unknown = [name for name in names if name not in MACHINE_TYPES]
    if unknown or not names:
        raise BadInput(f"--machines {text!r}: unknown machine type(s) {', '.join(unknown) or '?'}; "
                       f"use 'all' or a comma-separated list of {', '.join(MACHINE_TYPES)}")
    return names


def run(args: argparse.Namespace) -> int:
    if args.stream and args.stream_set:
        raise BadInput("--stream writes one recording, --stream-set a test set: give one")
    if args.snr is not None and (args.stream or args.stream_set):
        raise BadInput("--snr sets a data set's background; a stream's plant life has its own "
                       "(--plant and its flags): leave --snr out")
    if args.stream_set:
        machines = _machines(args.machines or SET_MACHINES)
        sections = _section_list(args.sections)
        domains = _domains(args.domains, args.domain) if args.domains is not None else ["source"]
        return _stream_set(args.out, machines, sections, domains,
                           options_from(args, plant=True), hours=args.hours,
                           stream_minutes=args.stream_minutes,
                           faults_per_machine=args.faults_per_machine,
                           severity=args.fault_severity, seed=args.seed)
    if args.stream:
        if not args.machine:
            raise BadInput("--stream needs --machine M (one of " + ", ".join(MACHINE_TYPES) + ")")
        if args.machine not in MACHINE_TYPES:
            raise BadInput(f"--machine {args.machine!r} is unknown; use one of "
                           + ", ".join(MACHINE_TYPES))
        out = Path(args.out)
        if out.suffix.lower() != ".wav":
            out = out / f"{args.machine}_section_{args.section:02d}_stream.wav"
        options = options_from(args)
        seconds = 120.0 if args.seconds is None else args.seconds
        faults: list[FaultSpec] | None = [] if args.no_fault else None
        if args.fault_ramp_seconds is not None and args.fault_onset != "gradual":
            raise BadInput("--fault-ramp-seconds needs --fault-onset gradual")
        started = time.process_time()
        meta = synthesize_stream(out, args.machine, section=args.section, seconds=seconds,
                                 fault_start=args.fault_start, fault_seconds=args.fault_seconds,
                                 seed=args.seed, domain=args.domain, fault_kind=args.fault_kind,
                                 severity=args.fault_severity, fault_onset=args.fault_onset,
                                 fault_ramp_s=args.fault_ramp_seconds, faults=faults,
                                 domains=_domains(args.domains, args.domain), options=options,
                                 take=args.take)
        fault = meta["fault"]
        what = (f"a {fault['kind']} fault ({fault['onset']}) at {fault['start_s']:g}-"
                f"{fault['end_s']:g} s" if fault else "no fault")
        print(f"wrote {out} ({meta['seconds']:g} s of {args.machine} section_"
              f"{args.section:02d}, {meta['domain']} {meta['attributes']}, "
              f"{len(meta['states'])} state(s), {len(meta['events'])} event(s)) with {what}; "
              f"labels {out.with_suffix('.json')} ({time.process_time() - started:.1f} s CPU)")
        return 0
    machines = _machines(args.machines or "all")
    args.sections = _section_count(args.sections)
    for flag, value in (("--train", args.train), ("--target-train", args.target_train),
                        ("--test", args.test)):
        if value < 0:
            raise BadInput(f"{flag} {value} is negative; give 0 or more clips")
    out = synthesize_dataset(args.out, machines, sections=args.sections, n_train=args.train,
                             n_target_train=args.target_train, n_test=args.test,
                             seconds=args.seconds, seed=args.seed, snr_db=args.snr)
    per_section = args.train + args.target_train + 4 * args.test
    total = per_section * args.sections * len(machines)
    print(f"wrote {total} clips under {out}: {len(machines)} machine type(s) x "
          f"{args.sections} section(s) x ({args.train} source + {args.target_train} target "
          f"training, {4 * args.test} test)")
    return 0


def _stream_set(out: str, machines: list[str], sections: list[int], domains: list[str],
                options: StreamOptions, hours: float, stream_minutes: float,
                faults_per_machine: int, severity: float | None, seed: int) -> int:
    """Write the test set of --stream-set and say what it holds (``severity`` None: 1)."""
    severity = 1.0 if severity is None else severity
    argv = ["asd-edge", "synth", out, "--stream-set", "--hours", f"{hours:g}",
            "--machines", ",".join(machines), "--sections", ",".join(map(str, sections)),
            "--stream-minutes", f"{stream_minutes:g}", "--faults-per-machine",
            str(faults_per_machine), "--fault-severity", f"{severity:g}",
            "--seed", str(seed), "--domains", ",".join(domains)]
    for flag, value, default in (
            ("--state-seconds", options.state_seconds, PLANT.state_seconds),
            ("--ramp-seconds", options.ramp_seconds, PLANT.ramp_seconds)):
        if value != default:
            argv += [flag, _pair_text(value)]
    for name in ("drift_db", "background_changes_per_hour", "other_machine_per_hour",
                 "transients_per_hour", "splices_per_hour"):
        if getattr(options, name) != getattr(PLANT, name):
            argv += ["--" + name.replace("_", "-"), f"{getattr(options, name):g}"]
    wall = time.monotonic()
    manifest = synthesize_stream_set(
        out, hours=hours, machines=machines, sections=sections,
        stream_minutes=stream_minutes, faults_per_machine=faults_per_machine,
        fault_severity=severity, seed=seed, domains=domains, options=options,
        command=shlex.join(argv), progress=lambda line: print(line, flush=True))
    total = manifest["normal_seconds"] + manifest["fault_seconds"]
    print(f"wrote {len(manifest['streams'])} streams under {out}: "
          f"{manifest['normal_seconds'] / 3600:.2f} h normal + "
          f"{manifest['fault_seconds'] / 3600:.2f} h with faults = {total / 3600:.2f} h of audio "
          f"in {time.monotonic() - wall:.0f} s ({manifest['cpu_seconds']:.0f} s CPU, "
          f"{manifest['cpu_seconds'] / max(total / 3600, 1e-9):.0f} s CPU per hour of audio); "
          f"train or enroll on: {manifest['train_with']}")
    return 0
