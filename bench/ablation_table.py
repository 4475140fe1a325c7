"""The table of one ablation run by bench/ablation.sh: official score and AUC(target) per
machine type, mean +- sd over the seeds, per condition (clean, each SNR), written as
$WORK/ablation_NAME.md and .json.

    python bench/ablation_table.py --work WORK --name spectrum [--flags "--spectrum-branch"]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

SYSTEMS = ("default", "stats", "autoencoder")  # the ablated variant goes second
METRICS = (("official", "official"), ("auc_target", "AUC(target)"))


def collect(base: Path, system: str) -> dict[int, dict]:
    """{seed: results.json} of ``base/eval/{system}_{seed}``."""
    found = {}
    for path in sorted(base.glob(f"eval/{system}_*/results.json")):
        match = re.fullmatch(rf"{re.escape(system)}_(\d+)", path.parent.name)
        if match:
            found[int(match.group(1))] = json.loads(path.read_text())
    return found


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * float(np.mean(values))
    return f"{mean:.2f}" if len(values) == 1 else \
        f"{mean:.2f} ± {100 * float(np.std(values, ddof=1)):.2f}"


def table(base: Path, systems: list[str]) -> tuple[list[str], dict]:
    results = {s: collect(base, s) for s in systems}
    results = {s: r for s, r in results.items() if r}
    machines = sorted({m for r in results.values() for one in r.values() for m in one["machines"]})
    lines, record = [], {}
    for key, label in METRICS:
        lines += [f"{label}, %, mean ± sd over seeds:", "",
                  "| system | seeds | " + " | ".join(machines) + " | all |",
                  "|---|---|" + "---|" * (len(machines) + 1)]
        for system, by_seed in results.items():
            seeds = sorted(by_seed)
            row = [cell([by_seed[s]["machines"][m]["summary"][key] for s in seeds
                         if m in by_seed[s]["machines"]]) for m in machines]
            row.append(cell([by_seed[s]["summary"][key] for s in seeds]))
            lines.append(f"| {system} | {','.join(map(str, seeds))} | " + " | ".join(row) + " |")
            record.setdefault(system, {})[key] = {
                "seeds": seeds,
                "all": [by_seed[s]["summary"][key] for s in seeds],
                **{m: [by_seed[s]["machines"][m]["summary"][key] for s in seeds
                       if m in by_seed[s]["machines"]] for m in machines}}
        lines.append("")
    return lines, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--name", required=True, help="the ablated variant's name")
    parser.add_argument("--flags", default="", help="its training flags, for the heading")
    args = parser.parse_args(argv)
    work = Path(args.work)
    systems = [SYSTEMS[0], args.name, *SYSTEMS[1:]]
    out = [f"# Ablation: {args.name} (`asd-edge train {args.flags}`) against the default", ""]
    record = {}
    for base in sorted(p for p in work.iterdir() if (p / "eval").is_dir()):
        condition = "clean" if base.name == "clean" else f"plant background at {base.name} dB"
        lines, record[base.name] = table(base, systems)
        out += [f"## {condition}", "", *lines]
    (work / f"ablation_{args.name}.md").write_text("\n".join(out) + "\n")
    (work / f"ablation_{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
