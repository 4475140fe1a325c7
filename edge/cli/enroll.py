"""``asd-edge enroll``: add normal sound of one unit to the bundle (or start a bundle).

    asd-edge enroll --file normal.wav --machine gearbox --section 0 [--models models]
    asd-edge enroll --dir recordings/ --machine pump --section 0     # no model yet: modulation
    asd-edge enroll --dir recordings/ --machine pump --section 0 --system stats+modulation
    asd-edge enroll --mic 0 --seconds 120 --machine gearbox --section 1
    asd-edge enroll --episode ID [--state-dir state] [--models models]   # "not a fault"

``--episode``: operator feedback (``edge.feedback.not_a_fault``): the evidence clip of an alarm
episode the daemon journaled in ``--state-dir`` is enrolled as normal sound of its machine and
section, and the change is journaled. A running daemon keeps its thresholds until it restarts;
its MQTT command (docs/EDGE.md "Operator feedback") changes them at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import numpy as np

from edge.audio import SAMPLE_RATE, read_audio
from edge.bundle.calibrate import AlarmBudget
from edge.bundle.enroll import (
    UNSEEN_SYSTEM,
    check_new_system,
    cut_clips,
    domain_counts,
    enroll,
    enrollment_advice,
)
from edge.dataset import AUDIO_SUFFIXES, parse_clip_name
from edge.errors import BadInput


def _named_domains(files: list[Path], given: str | None) -> list[str]:
    """Each file's domain: ``given`` (--domain), else the one its DCASE name carries
    (section_00_source_train_normal_0000...), else target (a site's own unit). Files whose
    names say they are anomalies are refused: enrollment teaches what normal sounds like."""
    domains, anomalies = [], []
    for path in files:
        try:
            clip = parse_clip_name(path)
        except BadInput:
            clip = None
        if clip is not None and clip.label == "anomaly":
            anomalies.append(path.name)
        domains.append(given or (clip.domain if clip is not None and clip.domain else "target"))
    if anomalies:
        raise BadInput(f"--dir: {len(anomalies)} file(s) are named as anomalies (e.g. "
                       f"{anomalies[0]}); enroll normal sound only: point --dir at the train "
                       "folder or move those files out")
    return domains


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()  # one is required: checked in run
    source.add_argument("--mic", help="record from this input device")
    source.add_argument("--file", help="a recording of normal sound")
    source.add_argument("--dir", help="a folder of recordings of normal sound")
    source.add_argument("--episode", help="not a fault: enroll the evidence clip of this alarm "
                                          "episode (its id) as normal; machine and section are "
                                          "the episode's")
    parser.add_argument("--machine", help="machine type (bundle folder name)")
    parser.add_argument("--section", help="the unit's section (0 or section_00)")
    parser.add_argument("--state-dir", default="state",
                        help="with --episode: the daemon's state folder, whose journal.jsonl "
                             "names the episode (default state)")
    parser.add_argument("--clips", help="with --episode: the evidence folder when it is not "
                                        "<state-dir>/clips")
    parser.add_argument("--even-if-open", action="store_true",
                        help="with --episode: enroll an episode that has not cleared yet")
    parser.add_argument("--models", default="models", help="folder of bundles (default models)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="with --mic: seconds to record (default 120)")
    parser.add_argument("--domain", default=None, choices=("source", "target"),
                        help="domain recorded in the references (default: a site's own unit, "
                             "target; with --episode the domain its hops were compared in)")
    parser.add_argument("--system", default=None,
                        help="a new bundle only (no trained model): its no-training detector(s), "
                             "stats, modulation, bandenergy or a '+' ensemble (default "
                             f"{UNSEEN_SYSTEM}; docs/ALARMS.md)")
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


EPISODE_ONLY = (("state_dir", "--state-dir", "state"), ("clips", "--clips", None),
                ("even_if_open", "--even-if-open", False))


def run(args: argparse.Namespace) -> int:
    if args.episode is not None:
        given = [flag for flag, value in (("--machine", args.machine),
                                          ("--section", args.section),
                                          ("--false-alarms-per-day", args.false_alarms_per_day),
                                          ("--system", args.system))
                 if value is not None]
        if args.clip_quantile_thresholds:
            given.append("--clip-quantile-thresholds")
        if given:
            raise BadInput(f"{', '.join(given)} do(es) not go with --episode: the machine and "
                           "section are the episode's, the calibration the bundle's")
        return enroll_episode(args.episode, args.state_dir, args.models, args.clips,
                              args.even_if_open, args.device, args.domain)
    if not (args.mic or args.file or args.dir):
        raise BadInput("give one of --mic DEVICE, --file WAV, --dir DIR and --episode ID")
    for name, flag, default in EPISODE_ONLY:
        if getattr(args, name) != default:
            raise BadInput(f"{flag} goes with --episode only")
    if args.machine is None or args.section is None:
        raise BadInput("--machine and --section are required with --mic, --file or --dir "
                       "(e.g. --machine gearbox --section 0)")
    section = _section(args.section)
    check_new_system(args.models, args.machine, args.system)
    domains: list[str] | str = args.domain or "target"
    if args.file:
        clips, where = cut_clips(read_audio(args.file), SAMPLE_RATE), args.file
    elif args.dir:
        folder = Path(args.dir)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise BadInput(f"--dir {folder}: no WAV or FLAC files there")
        named = _named_domains(files, args.domain)
        clips, domains = [], []
        for path, domain in zip(files, named, strict=True):
            cut = cut_clips(read_audio(path), SAMPLE_RATE)
            clips += cut
            domains += [domain] * len(cut)
        where = str(folder)
        if len(set(domains)) > 1:
            print("domains from the DCASE file names: " + ", ".join(
                f"{n} {d} clip(s)" for d, n in domain_counts(domains).items()))
    else:
        clips, where = cut_clips(_record(args.mic, args.seconds), SAMPLE_RATE), f"mic:{args.mic}"
    budget = None
    if args.false_alarms_per_day is not None:
        if not 0 < args.false_alarms_per_day <= 1000:
            raise BadInput(f"--false-alarms-per-day {args.false_alarms_per_day}: give a rate "
                           "above 0 and at most 1000 (e.g. 0.0333 for one a month)")
        budget = AlarmBudget(false_alarms_per_day=args.false_alarms_per_day)
    enrolled = enroll(args.models, args.machine, section, clips, where, domains,
                      args.device, budget=budget, clip_quantile=args.clip_quantile_thresholds,
                      system_name=args.system)
    seconds = sum(c.shape[0] for c in clips) / SAMPLE_RATE
    print(f"enrolled {enrolled.added} clip(s) ({seconds / 60:.1f} min) of {args.machine} "
          f"section_{section:02d} into {enrolled.folder}")
    for line in enrollment_advice(enrolled, seconds):
        print(line)
    print(f"check it with 'asd-edge bundle verify {enrolled.folder}'")
    return 0


def enroll_episode(episode: str, state_dir: str, models: str, clips: str | None,
                   even_if_open: bool, device: str, domain: Literal["source", "target"] | None
                   ) -> int:
    """``--episode ID``: the episode's clip enrolled as normal (``edge.feedback``)."""
    from edge.feedback import not_a_fault

    record = not_a_fault(episode, state_dir, models, clips_dir=clips, even_if_open=even_if_open,
                         via="cli", device=device, domain=domain)
    print(f"episode {record.episode} is not a fault: enrolled {record.clips_added} clip(s) "
          f"({record.audio_seconds:.1f} s) of {record.machine} section_{record.section} "
          f"({record.domain}) into {Path(models) / record.machine}; now "
          f"{record.references} references")
    print(f"threshold {record.threshold_before:.4g} -> {record.threshold_after:.4g}"
          + "".join(f"; {d} {t:.4g}" for d, t in sorted(record.domain_thresholds.items())))
    print("journaled; a running daemon uses the new thresholds after a restart (or send the "
          "MQTT command not_a_fault instead)")
    return 0
