"""``asd-edge synth``: synthetic machine sounds in the DCASE layout, or one long faulty stream."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.dataset import MACHINE_TYPES
from edge.errors import BadInput
from edge.synth import synthesize_dataset, synthesize_stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="data-set folder; with --stream a .wav path or a folder")
    parser.add_argument("--machines", default="all",
                        help=f"comma-separated machine types or 'all' ({','.join(MACHINE_TYPES)})")
    parser.add_argument("--sections", type=int, default=3, help="units per machine type")
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
    if args.stream:
        if not args.machine:
            raise BadInput("--stream needs --machine M (one of " + ", ".join(MACHINE_TYPES) + ")")
        if args.machine not in MACHINE_TYPES:
            raise BadInput(f"--machine {args.machine!r} is unknown; use one of "
                           + ", ".join(MACHINE_TYPES))
        out = Path(args.out)
        if out.suffix.lower() != ".wav":
            out = out / f"{args.machine}_section_{args.section:02d}_stream.wav"
        meta = synthesize_stream(out, args.machine, section=args.section,
                                 seconds=120.0 if args.seconds is None else args.seconds,
                                 fault_start=args.fault_start, fault_seconds=args.fault_seconds,
                                 seed=args.seed, domain=args.domain, fault_kind=args.fault_kind,
                                 severity=args.fault_severity)
        fault = meta["fault"]
        print(f"wrote {out} ({meta['seconds']:g} s of {args.machine} section_"
              f"{args.section:02d}, {meta['domain']} {meta['attributes']}) with a "
              f"{fault['kind']} fault at {fault['start_s']:g}-{fault['end_s']:g} s; "
              f"JSON {out.with_suffix('.json')}")
        return 0
    machines = _machines(args.machines)
    for flag, value in (("--train", args.train), ("--target-train", args.target_train),
                        ("--test", args.test)):
        if value < 0:
            raise BadInput(f"{flag} {value} is negative; give 0 or more clips")
    out = synthesize_dataset(args.out, machines, sections=args.sections, n_train=args.train,
                             n_target_train=args.target_train, n_test=args.test,
                             seconds=args.seconds, seed=args.seed)
    per_section = args.train + args.target_train + 4 * args.test
    total = per_section * args.sections * len(machines)
    print(f"wrote {total} clips under {out}: {len(machines)} machine type(s) x "
          f"{args.sections} section(s) x ({args.train} source + {args.target_train} target "
          f"training, {4 * args.test} test)")
    return 0
