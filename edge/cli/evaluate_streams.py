"""``asd-edge evaluate --streams DIR --models MODELS --out REPORT``: event-level evaluation.

Replays every labelled recording under DIR through the daemon's own path and reports false
alarms per hour of normal audio, faults detected and missed, detection delays and the normal
time spent in alarm (``edge.evaluation.streams``). Needs no torch: it runs on an edge box.
Stream settings (the alarm rule, window, hop, domain) come from the first stream of
``--config YAML`` when given, else the daemon's defaults.
"""

from __future__ import annotations

import argparse

from edge.errors import BadInput
from edge.progress import Bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", required=True,
                        help="folder of recordings (.wav/.flac), each with its .json labels")
    parser.add_argument("--models", required=True, help="folder of bundles (one per machine)")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--config", help="daemon YAML: its first stream's alarm, window, hop "
                                         "and domain settings apply to every recording")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads")
    parser.add_argument("--no-plots", action="store_true", help="skip the timeline PNGs")
    parser.add_argument("--save-scores", action="store_true",
                        help="also write every hop's score as scores/<recording>.npz")
    parser.add_argument("--operator", action="store_true",
                        help="a simulated operator answers 'not a fault' to every false alarm "
                             "once it clears (its clip enrolled, thresholds recalibrated, as "
                             "'enroll --episode' does); later recordings of the machine use "
                             "what it taught. A copy of --models changes, never the bundles")


def stream_settings_from(config_path: str | None) -> dict:
    if config_path is None:
        return {}
    from edge.config import load_config

    stream = load_config(config_path).streams[0]
    return stream.model_dump(include={"alarm", "window_seconds", "hop_seconds", "domain"},
                             exclude_unset=True)


def run(args: argparse.Namespace) -> int:
    from edge.evaluation.streams import evaluate_streams, find_streams

    total = len(find_streams(args.streams))
    settings = stream_settings_from(args.config)

    if args.threads is not None and args.threads < 1:
        raise BadInput(f"--threads {args.threads}: give 1 or more")
    with Bar("replayed recordings", total) as bar:
        bar.update(0)
        report = evaluate_streams(args.streams, args.models, args.out, settings, args.device,
                                  args.threads, plots=not args.no_plots, progress=bar.update,
                                  save_scores=args.save_scores, operator=args.operator)
    total_row = report["summary"]["total"]
    per_day = total_row["false_alarms_per_day"]
    print(f"{total_row['recordings']} recordings, {total_row['normal_hours']:.2f} h normal: "
          f"{total_row['false_alarms']} false alarm(s)"
          + (f" ({per_day:.2f} per day)" if per_day is not None else "")
          + f"; faults detected {total_row['detected']}/{total_row['faults']}"
          + (f", delay median {total_row['delay_median_s']:.1f} s, worst "
             f"{total_row['delay_worst_s']:.1f} s" if total_row["delay_median_s"] is not None
             else ""))
    if args.operator:
        print(f"the operator answered 'not a fault' {total_row['operator_answers']} time(s)")
    print(f"report: {args.out}/results.md")
    return 0
