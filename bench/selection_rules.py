"""Selection rules side by side on saved scores: which rule ships the best system?

    python bench/selection_rules.py SCORES_DIR [--splits 5] [--bootstrap 100] \
        [--out bench/results/selection_rules]

``SCORES_DIR`` is what ``python -m training.evaluate.compare`` saves beside its report
(``<out>_scores/<i>_<machine>.npz``: every system's standardised test scores). For every data
set, machine type and development/held-out split (the splits of ``asd-edge select``), each rule
chooses on the development half; the choice is scored on the held-out half and compared, with
a paired-bootstrap 95 % interval, with the best single system on the held-out half (hindsight)
and with stats. Rules:

- ``grid``: the weight grid, no margin (the selection before the margin rule);
- ``grid+margin``: each extra member must earn 0.02 on dev (the fixed margin of session 1);
- ``grid+margin 0.01``: the same with half the margin;
- ``grid+scaled margin``: the margin scaled with the development half's noise,
  0.04 / sqrt(n) for n clips in its smallest (section, domain, label) group (0.02 at n = 4,
  the size the fixed margin was measured on; ``training.evaluate.select.noise_margin``);
- ``best single``: the best single system on the development half;
- ``stats unless beaten``: stats, replaced by the grid+margin choice only where that choice
  beats stats on the development half beyond its own 95 % bootstrap interval.

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge.dataset import Clip
from training.evaluate.select import (
    MARGIN,
    development_mask,
    paired_bootstrap,
    select_machine,
    subset_score,
)
from training.evaluate.systems import MachineScores

RULES = ("grid", "grid+margin", "grid+margin 0.01", "grid+scaled margin", "best single",
         "stats unless beaten")
UNIT = {0: np.array([-1.0, 1.0])}  # calibration of mean 0, std 1: z-scores stay as they are


def load_scores(path: Path) -> tuple[list[Clip], list[str], np.ndarray]:
    """Clips, system names and (N, S) standardised scores saved by compare."""
    with np.load(path) as saved:
        clips = [Clip(path=Path(name), machine=path.stem.split("_", 1)[1], section=int(sec),
                      split="test", index=str(i), domain=str(dom),
                      label="anomaly" if anomalous else "normal")
                 for i, (name, sec, dom, anomalous) in enumerate(zip(
                     saved["clips"], saved["sections"], saved["domains"], saved["anomaly"],
                     strict=True))]
        return clips, [str(s) for s in saved["systems"]], saved["z"]


def choices(clips: list[Clip], names: list[str], z: np.ndarray, split: int,
            n_boot: int) -> dict[str, np.ndarray]:
    """Each rule's weight vector (S,) chosen on the development half of ``split``."""
    calibration = {s: UNIT[0] for s in {c.section for c in clips}}
    systems = [MachineScores(n, clips[0].machine, clips, z[:, i], calibration)
               for i, n in enumerate(names)]

    def weights(selection: dict) -> np.ndarray:
        chosen = dict(zip(selection["chosen"]["systems"], selection["chosen"]["weights"],
                          strict=True))
        return np.array([chosen.get(n, 0.0) for n in names])

    out = {"grid": weights(select_machine(systems, seed=split, margin=0.0))}
    margin = select_machine(systems, seed=split, margin=MARGIN)
    out["grid+margin"] = weights(margin)
    out["grid+margin 0.01"] = weights(select_machine(systems, seed=split, margin=0.01))
    out["grid+scaled margin"] = weights(select_machine(systems, seed=split, margin=None))
    out["best single"] = np.eye(len(names))[names.index(margin["best_single_on_dev"])]
    stats = np.eye(len(names))[names.index("stats")]
    dev = development_mask(clips, split)
    check = paired_bootstrap(clips, z @ out["grid+margin"], z @ stats, dev, n_boot=n_boot,
                             seed=split)
    out["stats unless beaten"] = out["grid+margin"] if check["low"] > 0 else stats
    return out


def evaluate(scores_dir: Path, splits: int, n_boot: int) -> dict:
    rows = []
    for path in sorted(scores_dir.glob("*.npz")):
        clips, names, z = load_scores(path)
        stats = z[:, names.index("stats")]
        for split in range(splits):
            heldout = ~development_mask(clips, split)
            singles = [subset_score(clips, z[:, i], heldout) for i in range(len(names))]
            best = int(np.argmax(singles))
            for rule, w in choices(clips, names, z, split, n_boot).items():
                ours = z @ w
                rows.append({
                    "data": path.stem, "split": split, "rule": rule,
                    "chosen": {n: float(x) for n, x in zip(names, w, strict=True) if x > 0},
                    "heldout": subset_score(clips, ours, heldout),
                    "hindsight": singles[best], "hindsight_name": names[best],
                    "stats": singles[names.index("stats")],
                    "vs_hindsight": paired_bootstrap(clips, ours, z[:, best], heldout,
                                                     n_boot=n_boot, seed=split),
                    "vs_stats": paired_bootstrap(clips, ours, stats, heldout, n_boot=n_boot,
                                                 seed=split)})
    return {"scores": str(scores_dir), "splits": splits, "bootstrap": n_boot, "rows": rows}


def markdown(result: dict) -> str:
    rows = result["rows"]
    machines = sorted({r["data"].split("_", 1)[1] for r in rows})
    lines = [f"Selection rules on `{result['scores']}` ({result['splits']} splits per data set "
             "and machine; held-out official score %, mean over cases; 'worse' = below the "
             "other system beyond the 95 % paired-bootstrap interval).", "",
             "| Rule | " + " | ".join(machines) + " | all | worse than hindsight best | "
             "worse than stats | mean vs stats |",
             "|---|" + "---|" * (len(machines) + 4)]
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        per = [np.mean([r["heldout"] for r in mine if r["data"].endswith("_" + m)])
               for m in machines]
        worse_h = sum(r["vs_hindsight"]["high"] < 0 for r in mine)
        worse_s = sum(r["vs_stats"]["high"] < 0 for r in mine)
        lines.append(f"| {rule} | " + " | ".join(f"{100 * v:.2f}" for v in per)
                     + f" | {100 * np.mean([r['heldout'] for r in mine]):.2f} | "
                     f"{worse_h} of {len(mine)} | {worse_s} of {len(mine)} | "
                     f"{100 * np.mean([r['vs_stats']['delta'] for r in mine]):+.2f} |")
    first = [r for r in rows if r["rule"] == RULES[0]]
    per = [np.mean([r["hindsight"] for r in first if r["data"].endswith("_" + m)])
           for m in machines]
    lines.append("| *hindsight best single* | " + " | ".join(f"{100 * v:.2f}" for v in per)
                 + f" | {100 * np.mean([r['hindsight'] for r in first]):.2f} | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scores_dir", type=Path)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results/selection_rules"))
    args = parser.parse_args(argv)
    if not any(args.scores_dir.glob("*.npz")):
        print(f"error: {args.scores_dir} holds no saved scores; run python -m "
              "training.evaluate.compare first (it writes <out>_scores/)", file=sys.stderr)
        return 2
    result = evaluate(args.scores_dir, args.splits, args.bootstrap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
