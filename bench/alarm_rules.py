"""Alarm rules side by side on saved hop scores: false alarms per day vs faults caught.

Takes the per-hop scores an ``asd-edge evaluate-streams --save-scores`` run wrote (the
daemon's own scores of every recording) and replays them through ``edge.alarms.rule.AlarmRule``
(the daemon's rule, the same class) for other rule settings, with the thresholds each setting
gets: for a bundle calibrated to a false-alarm budget the thresholds are recalibrated for the
rule from the bundle's stored out-of-sample traces (``edge.bundle.calibrate``), as an export
with that rule would set them; otherwise the bundle's thresholds as they are. The scores do
not depend on the rule, so no audio is replayed.

    .venv/bin/python bench/alarm_rules.py --report REPORT --models MODELS --streams DIR \
        [--rules 3/5,10/20,20/30] [--out bench/results/alarm_rules.json]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from edge.alarms.rule import AlarmRule, AlarmRuleConfig, StreamKey
from edge.bundle.calibrate import budget_thresholds
from edge.bundle.load import load_bundle
from edge.evaluation.streams import (
    StreamTrace,
    find_streams,
    read_labels,
    stream_metrics,
    summarise,
)
from edge.outputs.events import EventWindow, make_event

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def replay_rule(times: np.ndarray, scores: np.ndarray, domains: list[str | None],
                rule: AlarmRule, name: str) -> StreamTrace:
    """Run one recording's hop scores through ``rule``; the trace of its events."""
    trace = StreamTrace(name, list(times), list(scores), [rule.levels(d)[0] for d in domains])
    for t, s, d in zip(times, scores, domains, strict=True):
        # distinct times: the episode id is made of the episode's start time
        transition = rule.update(float(t), float(s), EPOCH + timedelta(seconds=float(t)), d)
        if transition is not None:
            window = EventWindow(start_utc=EPOCH, end_utc=EPOCH, start_s=float(t) - 10.0,
                                 end_s=float(t))
            trace.events.append(make_event(rule.stream, transition, window, "replay", {}, None))
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, help="evaluate-streams --save-scores output")
    parser.add_argument("--models", required=True)
    parser.add_argument("--streams", required=True)
    parser.add_argument("--rules", default="3/5,6/10,10/20,20/30,30/40",
                        help="trip_hops/window_hops settings to compare")
    parser.add_argument("--out", default=None, help="JSON to write (default: print only)")
    parser.add_argument("--false-alarms-per-day", type=float, default=None,
                        help="recalibrate a budget bundle for this rate (default: its own)")
    parser.add_argument("--confidence", type=float, default=None,
                        help="recalibrate a budget bundle at this confidence (default: its own)")
    args = parser.parse_args()
    files = find_streams(args.streams)
    labels = {wav: read_labels(wav) for wav in files}
    bundles = {m: load_bundle(args.models, m) for m in {lab.machine for lab in labels.values()}}
    traces = {m: b.traces for m, b in bundles.items()}  # read once, not per recording
    rows = {}
    for text in args.rules.split(","):
        k, n = (int(x) for x in text.split("/"))
        config = AlarmRuleConfig(trip_hops=k, window_hops=n)
        recalibrated = {}  # machine -> sections' thresholds for this rule (None: as stored)
        for machine, bundle in bundles.items():
            calibration = bundle.alarm_calibration
            recalibrated[machine] = None
            if calibration is not None and traces[machine] is not None:
                asked = {"false_alarms_per_day": args.false_alarms_per_day,
                         "confidence": args.confidence}
                budget = calibration[0].model_copy(update={
                    key: value for key, value in asked.items() if value is not None})
                recalibrated[machine] = budget_thresholds(bundle.system, traces[machine],
                                                          config, budget)
        results = []
        for wav in files:
            lab = labels[wav]
            bundle = bundles[lab.machine]
            saved = np.load(Path(args.report) / "scores" / f"{wav.stem}.npz")
            levels = bundle.system.thresholds[lab.section]
            # the hop's domain: the level the daemon compared it with (default rule)
            by_level = {round(v.threshold, 9): d for d, v in levels.domains.items()}
            domains = [by_level.get(round(float(t), 9)) for t in saved["thresholds"]]
            if recalibrated[lab.machine] is not None:
                levels = recalibrated[lab.machine][lab.section]
            rule = rule_for(lab, levels, config)
            trace = replay_rule(saved["times"], saved["scores"], domains, rule, wav.stem)
            results.append(stream_metrics(trace, lab, 10.0, config.hold_seconds))
        summary = summarise(results)
        rows[text] = summary
        print(f"rule {text:>6}: {summary_line(summary['total'])}")
    if args.out:
        write_json(args.out, {"report": args.report, "models": args.models, "rules": rows})


def rule_for(labels, levels, config: AlarmRuleConfig) -> AlarmRule:
    """The daemon's rule for a recording of ``labels``' unit with the section's calibrated
    ``levels`` (``SectionThreshold``: pooled and per domain, with their clear levels)."""
    return AlarmRule(StreamKey("bench", labels.machine, f"{labels.section:02d}"),
                     levels.threshold,
                     config.model_copy(update={"clear_threshold": levels.clear_threshold}),
                     {d: (v.threshold, v.clear_threshold) for d, v in levels.domains.items()})


def summary_line(total: dict) -> str:
    """One line of ``summarise``'s totals: false alarms, time in alarm, faults, delays."""
    return (f"false alarms/day {total['false_alarms_per_day']:.1f}, normal time in alarm "
            f"{total['normal_time_in_alarm']:.1%}, faults {total['detected']}/"
            f"{total['faults']}, delay median {total['delay_median_s'] or float('nan'):.1f} s "
            f"worst {total['delay_worst_s'] or float('nan'):.1f} s")


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
