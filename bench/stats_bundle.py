"""A statistics-only bundle per machine type from a data set's training clips (their attributes
kept, unlike ``asd-edge enroll``), with the plain or the stream-robust statistics (``--robust``:
``blockstd`` + ``KnnConfig(mixtures=8)``) and clip-quantile or budget thresholds
(``--budget R``): the statistics bundles of docs/ALARMS.md.

    .venv/bin/python bench/stats_bundle.py --data DATA --out MODELS [--robust] [--budget 0.0333]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from edge.alarms.rule import AlarmRuleConfig
from edge.audio import read_audio
from edge.bundle.calibrate import AlarmBudget
from edge.bundle.fit import References, fit_system, placeholder_member, write_bundle
from edge.bundle.system import ScoringSystem
from edge.dataset import scan
from edge.features import DEFAULT_FRONT_END, DEFAULT_PATCHING
from edge.scoring.backends import KnnConfig
from edge.scoring.scorer import ScorerConfig
from edge.scoring.spectral import SpectralFeatures
from edge.scoring.thresholds import ThresholdConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--machines", default="fan,gearbox,valve")
    parser.add_argument("--robust", action="store_true")
    parser.add_argument("--budget", type=float, default=None, help="false alarms per day")
    parser.add_argument("--window", type=float, default=10.0, help="calibration window, s")
    parser.add_argument("--rule", default="3/5", help="trip_hops/window_hops calibrated for")
    args = parser.parse_args()
    statistics = ("mean", "blockstd") if args.robust else ("mean", "std")
    features = SpectralFeatures(statistics=statistics)
    config = ScorerConfig(backend=KnnConfig(metric="euclidean",
                                            mixtures=8 if args.robust else 0),
                          standardize=True)
    trip, window = (int(x) for x in args.rule.split("/"))
    budget = None if args.budget is None else AlarmBudget(false_alarms_per_day=args.budget,
                                                          window_seconds=args.window)
    dataset = scan(args.data)
    for machine in args.machines.split(","):
        started = time.time()
        member = placeholder_member("stats", "spectral", features=features)
        system = ScoringSystem(DEFAULT_FRONT_END, DEFAULT_PATCHING, [member])
        references = References()
        for clip in dataset.select(machine=machine, split="train", label="normal"):
            references.add(system, read_audio(clip.path), {
                "file": clip.name, "section": clip.section, "domain": clip.domain,
                "attributes": clip.attribute_dict()}, audio=partial(read_audio, clip.path))
        fit_system(system, references, {"stats": config}, {"stats": [1.0]}, ThresholdConfig(),
                   budget=budget, rule=AlarmRuleConfig(trip_hops=trip, window_hops=window))
        write_bundle(Path(args.out) / machine, machine, system, references, {"stats": config},
                     {"system": {"chosen_by": "bench/stats_bundle.py"}, "provenance": {}})
        print(machine, f"{time.time() - started:.0f} s",
              {s: round(t.threshold, 3) for s, t in system.thresholds.items()})


if __name__ == "__main__":
    main()
