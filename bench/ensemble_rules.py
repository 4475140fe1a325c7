"""Ways of combining an ensemble's members, side by side on labelled streams: false alarms per
day against faults caught, each way calibrated to the bundle's own false-alarm budget.

Every recording under ``--streams`` is streamed once through the bundle's scoring path (the
daemon's windower, patch models and member scorers: ``edge.bundle.calibrate``'s
``score_recording``), keeping each member's raw hop score. Each combination then gets the
thresholds an export would give it (``budget_thresholds`` on the bundle's stored
out-of-sample calibration traces, which also hold every member's raw score) and is replayed
through the daemon's alarm rule (``bench/alarm_rules.replay_rule``) and scored by
``edge.evaluation.streams.stream_metrics``, as ``asd-edge evaluate --streams`` does.

    .venv/bin/python bench/ensemble_rules.py --models MODELS --streams DIR \
        [--combinations sum,min,embedding,stats] [--false-alarms-per-day 0.0333,1]
        [--out bench/results/ensemble_rules.json] [--traces member_scores.npz]

Combinations: ``sum`` (the bundle's own: weighted sum of standardised member scores), ``min``
(the smallest standardised member score: every member must find the window unusual), a
member's name (that member alone, raw), members joined by ``+`` (their weighted sum of
standardised scores, as a bundle of only those members would combine them), ``any`` or
``any:a+b`` (each member's raw score over its own budget threshold, the largest: any member
alone at its threshold raises).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alarm_rules import replay_rule, rule_for, summary_line, write_json  # noqa: E402

from edge.alarms.rule import AlarmRuleConfig  # noqa: E402
from edge.audio import read_audio  # noqa: E402
from edge.bundle.calibrate import budget_thresholds, score_recording  # noqa: E402
from edge.bundle.load import load_bundle  # noqa: E402
from edge.evaluation.streams import (  # noqa: E402
    StreamTrace,
    find_streams,
    read_labels,
    stream_metrics,
    summarise,
)
from edge.streaming import hop_patches_for, window_patches_for  # noqa: E402


class Combination:
    """Duck-types ``ScoringSystem.combine`` for ``budget_thresholds``.

    ``any`` / ``any:a+b``: every member (or those named) scaled by its own budget threshold
    (``tails``: section -> member -> threshold, from the member alone calibrated like a
    one-member bundle), the largest ratio: any member at its own threshold raises."""

    def __init__(self, system, how: str, tails: Mapping[int, Mapping[str, float]] | None = None,
                 ) -> None:
        self.system, self.how, self.tails = system, how, tails

    def combine(self, member_scores: Mapping[str, np.ndarray], section: int) -> np.ndarray:
        if self.how.startswith("any"):
            names = self.how.split(":", 1)[1].split("+") if ":" in self.how else \
                [m.name for m in self.system.members]
            assert self.tails is not None
            return np.max([np.asarray(member_scores[n]) / self.tails[section][n]
                           for n in names], axis=0)
        if self.how == "sum":
            return self.system.combine(member_scores, section)
        if self.how == "min":
            return np.min([m.standardise(np.asarray(member_scores[m.name]), section)
                           for m in self.system.members], axis=0)
        if "+" in self.how:  # a sub-ensemble: the weighted sum of these members' standardised
            names = self.how.split("+")
            return sum(m.weight * m.standardise(np.asarray(member_scores[m.name]), section)
                       for m in self.system.members if m.name in names)
        return np.asarray(member_scores[self.how])


def member_traces(bundle, wav: Path, section: int) -> tuple[np.ndarray, dict, list]:
    """Hop times (window ends, s), raw member scores and hop domains of one recording."""
    system, budget = bundle.system, bundle.alarm_calibration[0]
    windows = window_patches_for(budget.window_seconds, system.front_end, system.patching)
    hops = hop_patches_for(budget.hop_seconds, system.front_end, system.patching)
    waveform = read_audio(wav)
    traces = score_recording(system, waveform, section, windows, hops, 1)
    n = traces.hops
    seconds = waveform.shape[0] / system.front_end.sample_rate
    hop_s = (seconds - budget.window_seconds) / max(n - 1, 1)
    times = budget.window_seconds + hop_s * np.arange(n)
    return times, traces.members, [str(d) or None for d in traces.domains]


def save_traces(path: Path, scored: Mapping[Path, tuple]) -> None:
    """``member_traces`` of every recording into one .npz (no pickle)."""
    arrays: dict[str, np.ndarray] = {"files": np.array([str(w) for w in scored])}
    for i, (times, members, domains) in enumerate(scored.values()):
        arrays[f"{i}/times"] = times
        arrays[f"{i}/domains"] = np.array([d or "" for d in domains], "<U8")
        for name, values in members.items():
            arrays[f"{i}/member/{name}"] = values
    with path.open("wb") as f:
        np.savez(f, **arrays)


def load_traces(path: Path) -> dict[Path, tuple]:
    """What ``save_traces`` wrote."""
    with np.load(path, allow_pickle=False) as data:
        out = {}
        for i, wav in enumerate(data["files"]):
            members = {key.split("/", 2)[2]: data[key] for key in data.files
                       if key.startswith(f"{i}/member/")}
            out[Path(str(wav))] = (data[f"{i}/times"], members,
                                   [str(d) or None for d in data[f"{i}/domains"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--streams", required=True)
    parser.add_argument("--combinations", default="sum,min")
    parser.add_argument("--false-alarms-per-day", default=None, metavar="R1,R2",
                        help="recalibrate for these budgets (default: the bundle's own)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--traces", default=None, metavar="FILE",
                        help="keep the streamed member scores here and reuse them when it "
                             "exists (.npz; the same --models and --streams)")
    args = parser.parse_args()
    files = find_streams(args.streams)
    labels = {wav: read_labels(wav) for wav in files}
    bundles = {m: load_bundle(args.models, m) for m in {lab.machine for lab in labels.values()}}
    cache = Path(args.traces) if args.traces else None
    if cache is not None and cache.exists():
        scored = load_traces(cache)
    else:
        scored = {wav: member_traces(bundles[labels[wav].machine], wav, labels[wav].section)
                  for wav in files}
        if cache is not None:
            save_traces(cache, scored)
    config = AlarmRuleConfig()
    rows = {}
    rates = [None] if args.false_alarms_per_day is None else \
        [float(r) for r in args.false_alarms_per_day.split(",")]
    for how, rate in ((h, r) for h in args.combinations.split(",") for r in rates):
        results = []
        for wav in files:
            lab = labels[wav]
            bundle = bundles[lab.machine]
            budget = bundle.alarm_calibration[0]
            if rate is not None:
                budget = budget.model_copy(update={"false_alarms_per_day": rate})
            tails = None
            if how.startswith("any"):
                tails = {}
                for m in bundle.system.members:
                    alone = budget_thresholds(Combination(bundle.system, m.name), bundle.traces,
                                              config, budget)
                    for section, levels in alone.items():
                        tails.setdefault(section, {})[m.name] = levels.threshold
            combination = Combination(bundle.system, how, tails)
            levels = budget_thresholds(combination, bundle.traces, config, budget)[lab.section]
            times, members, domains = scored[wav]
            scores = combination.combine(members, lab.section)
            rule = rule_for(lab, levels, config)
            trace: StreamTrace = replay_rule(times, scores, domains, rule, wav.stem)
            result = stream_metrics(trace, lab, 10.0, config.hold_seconds)
            normal = np.ones(times.size, bool)
            for fault in lab.faults:
                normal &= ~((times > fault.start_s) & (times < fault.end_s + 10.0))
            result["threshold"] = levels.threshold
            result["normal_p99"] = float(np.quantile(scores[normal], 0.99)) if normal.any() \
                else None
            result["fault_median"] = float(np.median(scores[~normal])) if (~normal).any() \
                else None
            results.append(result)
        summary = summarise(results)
        name = how if rate is None else f"{how} at {rate:g}/day"
        rows[name] = {"summary": summary, "recordings": results}
        print(f"{name:>10}: {summary_line(summary['total'])}; thresholds "
              f"{sorted({round(r['threshold'], 3) for r in results})}")
        for r in results:
            if r["fault_median"] is not None:
                print(f"{'':>12}{r['stream']}: normal p99 {r['normal_p99']:.3g}, fault "
                      f"median {r['fault_median']:.3g}, threshold {r['threshold']:.3g}")
    if args.out:
        write_json(args.out, {"models": args.models, "streams": args.streams,
                              "combinations": rows})

if __name__ == "__main__":
    main()
