"""Machine-specific selection: the best single system or ensemble per machine type.

    asd-edge select --data DIR --systems stats,bandenergy,modulation,autoencoder \
        [--run disentangled=RUNS/a --run mtl=RUNS/b] --out SELECTION [--steps 4] [--seed 0]

1. Each system's scores are standardised per section with its out-of-sample scores of normal
   training clips (``MachineScores.calibration``): z = (score - mean) / std.
2. The test clips of each section are split in two halves, stratified by domain and label:
   a development half, on which every single system and every weighted sum of standardised
   scores on a simplex grid (weights in steps of 1 / ``steps``) is scored with the official
   metric; and a held-out half on which the chosen one is reported, beside every single
   system, so an ensemble that only fits the development half shows.
3. A run contributes its inference variants as separate systems, the Weighted variant at
   w = 0, 0.25, ..., 1: the disentanglement weight w is searched with the ensemble weights.
   An attentive neural process run (``--objective anp``) contributes one system,
   ``<label>:anp`` (ANP-Boot, training/anp.py).

Writes ``selection.json`` (the choice per machine type with its weights and per-section
standardisation, which export ships) and ``selection.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

from edge.dataset import Clip, Dataset, scan
from edge.errors import BadInput
from training.evaluate.metrics import official_score, section_metrics
from training.evaluate.systems import MachineScores

logger = logging.getLogger(__name__)

SELECTION_VERSION = 1


def standardization(scores: MachineScores) -> dict[int, tuple[float, float]]:
    """Per section (mean, std) of the out-of-sample normal scores."""
    out = {}
    for section, values in scores.calibration.items():
        values = values[np.isfinite(values)]
        out[section] = (float(values.mean()), float(max(values.std(), 1e-9)))
    return out


def standardized(scores: MachineScores) -> np.ndarray:
    """(N,) test scores as z-scores of their section's normal scores."""
    stats = standardization(scores)
    mean = np.array([stats[c.section][0] for c in scores.clips])
    std = np.array([stats[c.section][1] for c in scores.clips])
    return (scores.scores - mean) / std


def development_mask(clips: list[Clip], seed: int = 0) -> np.ndarray:
    """(N,) True for the development half: every (section, domain, label) group split 50/50."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(clips), dtype=bool)
    groups: dict[tuple, list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault((clip.section, clip.domain, clip.label), []).append(i)
    for key, rows in groups.items():
        if len(rows) < 2:
            raise BadInput(f"section {key[0]:02d} {key[1]} {key[2]}: {len(rows)} test clip(s); "
                           "selection needs at least 2 per section, domain and label to split "
                           "into development and held-out halves")
        chosen = rng.permutation(rows)[: len(rows) // 2]
        mask[chosen] = True
    return mask


def subset_score(clips: list[Clip], values: np.ndarray, mask: np.ndarray) -> float:
    """Official score of the clips where ``mask`` is True."""
    return official_score(subset_metrics(clips, values, mask))


def subset_metrics(clips: list[Clip], values: np.ndarray, mask: np.ndarray) -> list[dict]:
    """Per-section AUC(source), AUC(target), pAUC of the clips where ``mask`` is True."""
    return rows_metrics(clips, values, np.flatnonzero(mask))


def rows_metrics(clips: list[Clip], values: np.ndarray, rows: np.ndarray) -> list[dict]:
    """Per-section metrics of the clips at ``rows`` (M,) indices; repeats count (resampling)."""
    sections = np.array([clips[i].section for i in rows])
    per_section = []
    for section in sorted({c.section for c in clips}):
        picked = rows[sections == section]
        per_section.append(section_metrics(
            np.array([clips[i].is_anomaly for i in picked], dtype=bool), values[picked],
            [clips[i].domain for i in picked], where=f"section_{section:02d}"))
    return per_section


def paired_bootstrap(clips: list[Clip], a: np.ndarray, b: np.ndarray, mask: np.ndarray,
                     n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Official score of scores ``a`` minus scores ``b`` (both (N,)) on the clips in ``mask``.

    {"delta", "low", "high"}: the difference and its 95 % percentile interval over ``n_boot``
    resamples of those clips, drawn with replacement within each (section, domain, label)
    group; both systems are scored on the same resample (paired), so the interval is the
    uncertainty of the difference, not of either score.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(mask):
        groups.setdefault((clips[i].section, clips[i].domain, clips[i].label), []).append(i)
    arrays = [np.array(rows) for rows in groups.values()]
    every = np.concatenate(arrays)
    delta = (official_score(rows_metrics(clips, a, every))
             - official_score(rows_metrics(clips, b, every)))
    diffs = []
    for _ in range(n_boot):
        rows = np.concatenate([rng.choice(g, size=g.size) for g in arrays])
        diffs.append(official_score(rows_metrics(clips, a, rows))
                     - official_score(rows_metrics(clips, b, rows)))
    low, high = np.quantile(diffs, [0.025, 0.975])
    return {"delta": float(delta), "low": float(low), "high": float(high)}


def simplex_grid(n_systems: int, steps: int) -> np.ndarray:
    """(G, n_systems) non-negative weights summing to 1, in steps of 1 / ``steps``."""
    # stars and bars: ``steps`` units into ``n_systems`` bins, C(steps + n - 1, n - 1) rows;
    # in the lexicographic order of the counts (ties in the selection keep the first row)
    rows = []
    for bars in itertools.combinations(range(steps + n_systems - 1), n_systems - 1):
        edges = (-1, *bars, steps + n_systems - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_systems)])
    grid = np.array(rows, dtype=np.float64).reshape(-1, n_systems)
    return grid[np.lexsort(grid.T[::-1])] / steps


MARGIN = 0.02  # official score a member must add on a development half of 4 clips per group
MARGIN_GROUP = 4  # the group size MARGIN was measured at (docs/RESULTS.md)


def noise_margin(clips: list[Clip], dev: np.ndarray) -> float:
    """The margin for a development half: MARGIN scaled like the noise of an AUC, 1/sqrt(n),
    for n clips in the half's smallest (section, domain, label) group."""
    counts: dict[tuple, int] = {}
    for clip in (c for c, d in zip(clips, dev, strict=True) if d):
        key = (clip.section, clip.domain, clip.label)
        counts[key] = counts.get(key, 0) + 1
    return MARGIN * float(np.sqrt(MARGIN_GROUP / min(counts.values())))


def select_machine(systems: list[MachineScores], steps: int = 4, seed: int = 0,
                   margin: float | None = None) -> dict:
    """Choose the best single system or weighted ensemble of one machine type on a dev half.

    Each member beyond the first must earn ``margin`` (official score, 0-1) on the development
    half: a grid point's score counts ``margin * (members - 1)`` less. Without it the grid
    search rewards ensembles whose edge on a small development half is noise (on
    docs/RESULTS.md's sets of 4 clips per group such ensembles lost to the best single system
    on the held-out half). ``None``: ``noise_margin``, 0.02 at 4 clips per group and smaller as
    the development half grows.
    """
    clips = systems[0].clips
    names = [s.system for s in systems]
    for other in systems[1:]:
        if [c.name for c in other.clips] != [c.name for c in clips]:
            raise ValueError(f"{other.system} scored other clips than {names[0]}")
    z = np.stack([standardized(s) for s in systems], axis=1)  # (N, S)
    dev = development_mask(clips, seed)
    if margin is None:
        margin = noise_margin(clips, dev)
    grid = simplex_grid(len(systems), steps)
    dev_scores = np.array([subset_score(clips, z @ w, dev) for w in grid])
    # Ties go to fewer members, then to the system listed first (list the simpler first):
    # never ship more than the data supports.
    members = (grid > 0).sum(1)
    first = np.argmax(grid > 0, axis=1)
    adjusted = dev_scores - margin * (members - 1)
    best = int(np.lexsort((first, members, -np.round(adjusted, 12)))[0])
    weights = grid[best]
    singles = {name: {"dev": subset_score(clips, z[:, i], dev),
                      "heldout": subset_score(clips, z[:, i], ~dev),
                      "all": subset_score(clips, z[:, i], np.ones_like(dev)),
                      "sections": subset_metrics(clips, z[:, i], np.ones_like(dev))}
               for i, name in enumerate(names)}
    best_single = max(singles, key=lambda n: singles[n]["dev"])
    chosen = {name: float(w) for name, w in zip(names, weights, strict=True) if w > 0}
    return {
        "chosen": {"systems": list(chosen), "weights": list(chosen.values())},
        "dev": float(dev_scores[best]),
        "heldout": subset_score(clips, z @ weights, ~dev),
        "best_single_on_dev": best_single,
        "candidates": singles,
        "standardization": {s.system: {f"{k:02d}": list(v) for k, v in
                                       standardization(s).items()} for s in systems
                            if s.system in chosen},
        "settings": {s.system: s.settings for s in systems if s.system in chosen},
        "n_dev": int(dev.sum()), "n_heldout": int((~dev).sum()), "margin": margin,
    }


def collect_systems(dataset: Dataset, machine: str, systems: list[str],
                    runs: dict[str, str], epochs: int = 100, seed: int = 0,
                    w_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
                    pooling: str = "mean") -> list[MachineScores]:
    """Scores of every named system (and every variant of every run) on ``machine``.

    ``pooling`` (mean, std, meanstd) turns a run's patch embeddings into clip embeddings.
    """
    from training.evaluate.systems import SPECTRAL_NAMES, score_embedder, score_spectral

    out = []
    for name in systems:
        if name in SPECTRAL_NAMES:
            out.append(score_spectral(dataset, machine, name))
        elif name == "autoencoder":
            from training.autoencoder import AutoencoderConfig, score_autoencoder

            out.append(score_autoencoder(dataset, machine,
                                         AutoencoderConfig(epochs=epochs, seed=seed)))
        else:
            raise BadInput(f"system {name!r} unknown; use {', '.join(SPECTRAL_NAMES)}, "
                           "autoencoder (and --run NAME=RUN for trained runs)")
    for label, run_dir in runs.items():
        from training.anp import is_anp_checkpoint, load_anp_run
        from training.checkpoint import load_checkpoint
        from training.infer import load_run

        if is_anp_checkpoint(load_checkpoint(run_dir)):  # one candidate: ANP-Boot
            from training.evaluate.systems import score_anp

            out.append(score_anp(dataset, machine, load_anp_run(run_dir), f"{label}:anp",
                                 seed=seed))
            continue
        loaded = load_run(run_dir)
        if machine not in loaded.machines:
            raise BadInput(f"run {run_dir} was trained on {', '.join(loaded.machines)}, not "
                           f"{machine}; give runs of the data set's machine types")
        cache: dict = {}
        specs = [("sections", 1.0)]
        if loaded.attribute_dim > 0:
            specs += [("concat", 0.5), ("attributes", 0.0)]
            specs += [("weighted", w) for w in w_grid if 0.0 < w < 1.0]
        for variant, weight in specs:
            suffix = f"weighted@{weight:g}" if variant == "weighted" else variant
            out.append(score_embedder(dataset, machine, loaded, f"{label}:{suffix}",
                                      variant=variant, weight=weight, pooling=pooling,
                                      cache=cache))
    return out


def selection_markdown(selection: dict) -> str:
    lines = ["# Machine-specific selection", "",
             "Official score (%) on the development half (used to choose) and on the held-out "
             "half (not used). Scores standardised per section on normal references.", "",
             "| Machine | System | dev | held-out | all test |", "|---|---|---|---|---|"]
    for machine, result in selection["machines"].items():
        for name, s in result["candidates"].items():
            lines.append(f"| {machine} | {name} | {100 * s['dev']:.2f} | "
                         f"{100 * s['heldout']:.2f} | {100 * s['all']:.2f} |")
        chosen = " + ".join(f"{w:.2f} {n}" for n, w in zip(result["chosen"]["systems"],
                                                          result["chosen"]["weights"],
                                                          strict=True))
        lines.append(f"| {machine} | **chosen: {chosen}** | {100 * result['dev']:.2f} | "
                     f"{100 * result['heldout']:.2f} | |")
    return "\n".join(lines) + "\n"


def run_selection(data: str, systems: list[str], runs: dict[str, str], out: str | Path,
                  machines: list[str] | None = None, steps: int = 4, seed: int = 0,
                  epochs: int = 100, margin: float | None = None, pooling: str = "mean"
                  ) -> dict:
    dataset = scan(data)
    chosen_machines = dataset.require_machines(machines or ["all"])
    selection: dict = {"version": SELECTION_VERSION, "data": str(data), "seed": seed,
                       "runs": {label: str(Path(p).resolve()) for label, p in runs.items()},
                       "steps": steps, "pooling": pooling, "machines": {}}
    for machine in chosen_machines:
        scores = collect_systems(dataset, machine, systems, runs, epochs=epochs, seed=seed,
                                 pooling=pooling)
        if not scores:
            raise BadInput("no systems given; use --systems and/or --run NAME=RUN")
        selection["machines"][machine] = select_machine(scores, steps=steps, seed=seed,
                                                        margin=margin)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps(selection, indent=2))
    (out / "selection.md").write_text(selection_markdown(selection))
    return selection


def _margin(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give auto or e.g. 0.02") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1); give auto or e.g. 0.02")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data set in the DCASE layout")
    parser.add_argument("--systems", default="stats,bandenergy,modulation",
                        help="comma list of stats, bandenergy, modulation, autoencoder "
                             "(default stats,bandenergy,modulation)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN",
                        help="a trained run; its variants become candidates (repeatable)")
    parser.add_argument("--machines", default="all")
    parser.add_argument("--out", required=True,
                        help="folder for selection.json (give the run folder and export "
                             "finds it there)")
    parser.add_argument("--steps", type=int, default=4, help="grid steps per weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=100, help="autoencoder epochs")
    parser.add_argument("--pooling", default="mean", choices=("mean", "std", "meanstd"),
                        help="how a run's patch embeddings become a clip embedding")
    parser.add_argument("--margin", type=_margin, default=None, metavar="auto|M",
                        help="official score (0-1) each extra ensemble member must add on the "
                             "development half; auto (default): 0.04 / sqrt(n) for n clips in "
                             "the half's smallest section/domain/label group (0.02 at n = 4)")


def run(args: argparse.Namespace) -> int:
    if any("=" not in item for item in args.run):
        raise BadInput(f"--run {' '.join(args.run)}: give NAME=RUN_DIR, e.g. --run "
                       "disentangled=runs/gearbox")
    runs = dict(item.split("=", 1) for item in args.run)
    systems = [s for s in args.systems.split(",") if s]
    selection = run_selection(args.data, systems, runs, args.out,
                              args.machines.split(",") if args.machines != "all" else None,
                              args.steps, args.seed, args.epochs, args.margin, args.pooling)
    print(selection_markdown(selection))
    return 0


def main(argv: list[str] | None = None) -> int:
    from edge.cli import main as cli_main

    return cli_main(["select", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
