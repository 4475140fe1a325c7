"""``asd-edge enroll``: add normal sound of one unit to the bundle (or start a bundle).

    asd-edge enroll --file normal.wav --machine gearbox --section 0 [--models models]
    asd-edge enroll --dir recordings/ --machine pump --section 0     # no model yet: statistics
    asd-edge enroll --mic 0 --seconds 120 --machine gearbox --section 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, read_audio
from edge.bundle.calibrate import AlarmBudget
from edge.bundle.enroll import cut_clips, enroll, enrollment_advice
from edge.dataset import AUDIO_SUFFIXES
from edge.errors import BadInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mic", help="record from this input device")
    source.add_argument("--file", help="a recording of normal sound")
    source.add_argument("--dir", help="a folder of recordings of normal sound")
    parser.add_argument("--machine", required=True, help="machine type (bundle folder name)")
    parser.add_argument("--section", required=True, help="the unit's section (0 or section_00)")
    parser.add_argument("--models", default="models", help="folder of bundles (default models)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="with --mic: seconds to record (default 120)")
    parser.add_argument("--domain", default="target", choices=("source", "target"),
                        help="domain recorded in the references (a site's own unit: target)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    thresholds = parser.add_mutually_exclusive_group()
    thresholds.add_argument("--false-alarms-per-day", type=float, default=None,
                            help="false-alarm budget per stream (default: the bundle's, else "
                                 "one a month)")
    thresholds.add_argument("--clip-quantile-thresholds", action="store_true",
                            help="DCASE clip-quantile alarm thresholds instead of a "
                                 "false-alarm budget (no promise; for comparisons)")


def _section(value: str) -> int:
    text = value.removeprefix("section_")
    if not text.isdigit() or not 0 <= int(text) <= 99:
        raise BadInput(f"--section {value!r}: give a number 0-99 or section_NN")
    return int(text)


def _record(device: str, seconds: float) -> np.ndarray:
    from edge.capture.mic import MicSource

    spec: int | str = int(device) if device.isdigit() else device
    source = MicSource(spec)
    chunks, total = [], 0
    print(f"recording {seconds:.0f} s from {device} ...", flush=True)
    try:
        for block in source:
            chunks.append(block.samples)
            total += block.samples.shape[0]
            if total >= seconds * SAMPLE_RATE:
                break
    finally:
        source.close()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def run(args: argparse.Namespace) -> int:
    section = _section(args.section)
    if args.file:
        clips, where = cut_clips(read_audio(args.file), SAMPLE_RATE), args.file
    elif args.dir:
        folder = Path(args.dir)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise BadInput(f"--dir {folder}: no WAV or FLAC files there")
        clips = [clip for path in files for clip in cut_clips(read_audio(path), SAMPLE_RATE)]
        where = str(folder)
    else:
        clips, where = cut_clips(_record(args.mic, args.seconds), SAMPLE_RATE), f"mic:{args.mic}"
    budget = None
    if args.false_alarms_per_day is not None:
        if not 0 < args.false_alarms_per_day <= 1000:
            raise BadInput(f"--false-alarms-per-day {args.false_alarms_per_day}: give a rate "
                           "above 0 and at most 1000 (e.g. 0.0333 for one a month)")
        budget = AlarmBudget(false_alarms_per_day=args.false_alarms_per_day)
    enrolled = enroll(args.models, args.machine, section, clips, where, args.domain,
                      args.device, budget=budget, clip_quantile=args.clip_quantile_thresholds)
    seconds = sum(c.shape[0] for c in clips) / SAMPLE_RATE
    print(f"enrolled {enrolled.added} clip(s) ({seconds / 60:.1f} min) of {args.machine} "
          f"section_{section:02d} into {enrolled.folder}")
    for line in enrollment_advice(enrolled, seconds):
        print(line)
    print(f"check it with 'asd-edge bundle verify {enrolled.folder}'")
    return 0
