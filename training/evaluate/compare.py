"""One comparison table of every system, per machine type, over one or more data sets.

    python -m training.evaluate.compare --data SYNTH_SEED0 [--data SYNTH_SEED1 ...] \
        [--systems stats,bandenergy,autoencoder] [--run disentangled=RUNS/dis_{i} ...] \
        [--epochs 100] --out docs/RESULTS.md

``{i}`` in a run path is the index of the data set (one run trained per data seed). For each
data set, every system (and every variant of every run) is scored on the full test split, and
the machine-specific selection (``training.evaluate.select``) is made on a development half
and reported on the held-out half. The table gives the official score (%) as mean ± standard
deviation over the data sets (just the value for one set). The numbers are measured when the
command runs; nothing in the document is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge import progress
from edge.dataset import scan
from edge.errors import AsdEdgeError
from training.evaluate.metrics import official_score, summary
from training.evaluate.select import (
    collect_systems,
    development_mask,
    paired_bootstrap,
    select_machine,
    standardized,
)
from training.evaluate.systems import MachineScores

logger = logging.getLogger(__name__)

DOMAIN_KEYS = ("auc_source", "auc_target")


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    values_pct = 100 * np.asarray(values)
    if len(values_pct) == 1:
        return f"{values_pct[0]:.2f}"
    return f"{values_pct.mean():.2f} ± {values_pct.std(ddof=1):.2f}"


def compare(data_sets: list[str], systems: list[str], runs: dict[str, str], epochs: int = 100,
            steps: int = 4, seed: int = 0, splits: int = 1, n_boot: int = 200,
            pooling: str = "mean", scores_dir: Path | None = None) -> dict:
    """Per data set, machine and system: official scores; plus the selection per machine.

    ``systems`` holds the official scores, ``domains`` the harmonic means of AUC(source) and
    AUC(target) over the same sections: {"auc_source"|"auc_target": {system: {machine: [..]}}}.
    ``selection`` holds, per machine, one row per data set and development/held-out split
    (``splits`` random splits, seeds 0..splits-1), each with paired-bootstrap differences of
    the chosen system's held-out score against the best single system in hindsight, the best
    single system on the development half, and stats. With ``scores_dir``, every system's
    standardised test scores are saved there per data set and machine
    (``<i>_<machine>.npz``: systems (S,), clips (N,), sections, domains, anomaly (N,),
    z (N, S)) so that other selection rules can be tried without scoring again.
    """
    per_system: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_domain = {key: defaultdict(lambda: defaultdict(list)) for key in DOMAIN_KEYS}
    chosen: dict[str, list[dict]] = defaultdict(list)
    for i, data in enumerate(data_sets):
        dataset = scan(data)
        overall: dict[str, list[dict]] = defaultdict(list)
        for machine in dataset.machines:
            set_runs = {name: path.format(i=i) for name, path in runs.items()}
            scores = collect_systems(dataset, machine, systems, set_runs, epochs=epochs,
                                     seed=seed, pooling=pooling)
            if scores_dir is not None:
                save_scores(Path(scores_dir) / f"{i}_{machine}.npz", scores)
            for split in range(splits):
                selection = select_machine(scores, steps=steps, seed=split)
                if split == 0:  # "all" does not depend on the split
                    for name, result in selection["candidates"].items():
                        per_system[name][machine].append(result["all"])
                        _add_domains(per_domain, name, machine, result["sections"])
                        overall[name] += result["sections"]
                chosen[machine].append({"data": data, "split": split,
                                        **selection_check(scores, selection, split, n_boot)})
        for name, sections in overall.items():
            per_system[name]["all"].append(official_score(sections))
            _add_domains(per_domain, name, "all", sections)
    return {"data": data_sets, "systems": {k: dict(v) for k, v in per_system.items()},
            "domains": {key: {k: dict(v) for k, v in table.items()}
                        for key, table in per_domain.items()},
            "selection": dict(chosen)}


def save_scores(path: Path, scores: list[MachineScores]) -> None:
    """Every system's standardised test scores of one machine type, with the clips' labels."""
    clips = scores[0].clips
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, systems=np.array([s.system for s in scores]),
             clips=np.array([c.path.name for c in clips]),
             sections=np.array([c.section for c in clips]),
             domains=np.array([c.domain for c in clips]),
             anomaly=np.array([c.is_anomaly for c in clips]),
             z=np.stack([standardized(s) for s in scores], axis=1))


def selection_check(scores: list[MachineScores], selection: dict, split: int,
                    n_boot: int = 200) -> dict:
    """The choice and how it fares on the held-out half against simpler choices.

    Paired-bootstrap differences (official score, 0-1) of the chosen system on the held-out
    half minus: the best single system on the held-out half (hindsight: an upper bound no
    choice can promise, biased upward by taking a maximum), the best single system on the
    development half (the choice without ensembles), and stats (the no-training detector).
    """
    names = [s.system for s in scores]
    clips = scores[0].clips
    z = np.stack([standardized(s) for s in scores], axis=1)  # (N, S)
    heldout = ~development_mask(clips, split)
    weights = dict(zip(selection["chosen"]["systems"], selection["chosen"]["weights"],
                       strict=True))
    ours = z @ np.array([weights.get(n, 0.0) for n in names])
    candidates = selection["candidates"]
    hindsight = max(candidates, key=lambda n: candidates[n]["heldout"])
    against = {"hindsight": hindsight, "best_on_dev": selection["best_single_on_dev"]}
    if "stats" in names:
        against["stats"] = "stats"
    row = {"chosen": selection["chosen"], "dev": selection["dev"],
           "heldout": selection["heldout"], "best_single_heldout": candidates[hindsight]["heldout"],
           "best_single_heldout_name": hindsight,
           "best_single_on_dev": selection["best_single_on_dev"],
           "best_single_on_dev_heldout": candidates[selection["best_single_on_dev"]]["heldout"]}
    for key, name in against.items():
        row[f"vs_{key}"] = paired_bootstrap(clips, ours, z[:, names.index(name)], heldout,
                                            n_boot=n_boot, seed=split)
        row[f"vs_{key}"]["heldout"] = candidates[name]["heldout"]
    return row


def _add_domains(per_domain: dict, name: str, machine: str, sections: list[dict]) -> None:
    means = summary(dict(enumerate(sections)))
    for key in DOMAIN_KEYS:
        per_domain[key][name][machine].append(means[key])


def _table(values: dict[str, dict[str, list[float]]], machines: list[str]) -> list[str]:
    lines = ["| System | " + " | ".join(machines) + " | all |",
             "|---|" + "---|" * (len(machines) + 1)]
    for name, row in values.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(m, [])) for m in machines)
                     + f" | {_cell(row.get('all', []))} |")
    return lines


def markdown(result: dict, command: str) -> str:
    machines = sorted({m for v in result["systems"].values() for m in v} - {"all"})
    lines = ["# Results", "", f"Produced by `{command}` on {len(result['data'])} data set(s): "
             f"{', '.join(result['data'])}.", "",
             "Official DCASE 2022 Task 2 score (%), harmonic mean of AUC(source), AUC(target) "
             "and pAUC over all sections; mean ± standard deviation over the data sets.", ""]
    lines += _table(result["systems"], machines)
    for key, title in (("auc_source", "AUC(source)"), ("auc_target", "AUC(target)")):
        if key in result.get("domains", {}):
            lines += ["", f"## {title}", "", f"{title} (%), harmonic mean over the sections; "
                      "mean ± standard deviation over the data sets.", ""]
            lines += _table(result["domains"][key], machines)
    lines += selection_markdown(result["selection"])
    return "\n".join(lines) + "\n"


def _delta(check: dict) -> str:
    """A difference with its interval, in points; bold when the interval lies below zero."""
    text = (f"{100 * check['delta']:+.1f} [{100 * check['low']:+.1f}, "
            f"{100 * check['high']:+.1f}]")
    return f"**{text}**" if check["high"] < 0 else text


def _mean_heldout(rows: list[dict], key: str) -> str:
    """Mean held-out score (%) of the chosen system (key "heldout") or of a compared one."""
    values = [r[key]["heldout"] if isinstance(r[key], dict) else r[key] for r in rows if key in r]
    return f"{100 * np.mean(values):.2f}" if values else "-"


def _worse(rows: list[dict], key: str) -> str:
    """In how many rows the chosen system is worse than the compared one beyond the interval."""
    checks = [r[key] for r in rows if key in r]
    return f"{sum(c['high'] < 0 for c in checks)} of {len(checks)}" if checks else "-"


def selection_markdown(selection: dict[str, list[dict]]) -> list[str]:
    """The per-case table (split 0) and the summary over every data set and split."""
    lines = ["", "## Machine-specific selection", "",
             "Chosen on a development half of the test clips, reported on the held-out half. "
             "Differences are official-score points of the chosen system minus another, on the "
             "held-out half, with a 95 % paired-bootstrap interval (resampling held-out clips "
             "within section, domain and label); **bold**: the chosen system is worse beyond "
             "the interval. \"Hindsight\" is the best single system on the held-out half: an "
             "upper bound no choice made on the development half can promise.", "",
             "| Machine | Data | Chosen | dev | held-out | vs hindsight best | "
             "vs best single on dev | vs stats |", "|---|---|---|---|---|---|---|---|"]
    for machine, rows in selection.items():
        for row in rows:
            if row.get("split", 0) != 0:
                continue
            chosen = " + ".join(f"{w:.2f} {n}" for n, w in zip(
                row["chosen"]["systems"], row["chosen"]["weights"], strict=True))
            stats = _delta(row["vs_stats"]) if "vs_stats" in row else "-"
            lines.append(f"| {machine} | {Path(row['data']).name} | {chosen} | "
                         f"{100 * row['dev']:.2f} | {100 * row['heldout']:.2f} | "
                         f"{_delta(row['vs_hindsight'])} ({row['best_single_heldout_name']}) | "
                         f"{_delta(row['vs_best_on_dev'])} | {stats} |")
    lines += ["", "Over every data set and split: mean held-out official score (%) of the chosen "
              "system and of the alternatives, and in how many cases the chosen system is worse "
              "beyond the interval.", "",
              "| Machine | cases | chosen | best single on dev | stats | hindsight best | "
              "worse than hindsight | worse than best single on dev | worse than stats |",
              "|---|---|---|---|---|---|---|---|---|"]
    for machine, rows in [*selection.items(), ("all", [r for v in selection.values() for r in v])]:
        lines.append(f"| {machine} | {len(rows)} | {_mean_heldout(rows, 'heldout')} | "
                     f"{_mean_heldout(rows, 'vs_best_on_dev')} | "
                     f"{_mean_heldout(rows, 'vs_stats')} | "
                     f"{_mean_heldout(rows, 'vs_hindsight')} | {_worse(rows, 'vs_hindsight')} | "
                     f"{_worse(rows, 'vs_best_on_dev')} | {_worse(rows, 'vs_stats')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.evaluate.compare",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", required=True, help="repeatable")
    parser.add_argument("--systems", default="stats,bandenergy,autoencoder")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN")
    parser.add_argument("--epochs", type=int, default=100, help="autoencoder epochs")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, default=1,
                        help="development/held-out splits per data set for the selection check")
    parser.add_argument("--pooling", default="mean", choices=("mean", "std", "meanstd"),
                        help="clip pooling of the runs' patch embeddings")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="resamples for the held-out difference intervals")
    parser.add_argument("--out", required=True, help="Markdown file (JSON written beside it)")
    parser.add_argument("--progress", action="store_true",
                        help="progress bars on stderr also when it is not a terminal")
    args = parser.parse_args(argv)
    progress.configure(progress.wanted(args.progress))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any("=" not in item for item in args.run):
        print("error: --run takes NAME=RUN_DIR", file=sys.stderr)
        return 2
    runs = dict(item.split("=", 1) for item in args.run)
    try:
        result = compare(args.data, [s for s in args.systems.split(",") if s], runs,
                         args.epochs, args.steps, args.seed, args.splits, args.bootstrap,
                         args.pooling, Path(args.out).with_name(Path(args.out).stem + "_scores"))
    except AsdEdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        progress.configure(False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(result, "python -m training.evaluate.compare " + " ".join(argv)))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
