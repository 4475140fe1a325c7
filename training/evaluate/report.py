"""From per-clip scores to the DCASE files, results.json, a Markdown table and plots.

The same writer serves every system (a run, the spectral detectors, the autoencoder, an
exported bundle, an ensemble): it only needs ``MachineScores``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from edge.scoring.thresholds import ThresholdConfig, calibrate_threshold
from training.evaluate.metrics import section_metrics, summary
from training.evaluate.systems import MachineScores

logger = logging.getLogger(__name__)


def machine_results(scores: MachineScores, thresholds: ThresholdConfig) -> dict:
    """Per section: metrics, threshold and decision counts.

    The threshold is the section's fixed one in ``scores.thresholds`` (a bundle's own) when
    given, else calibrated from the section's out-of-sample normal scores with ``thresholds``.
    With ``scores.decision_thresholds`` each clip is decided with its own instead
    (``threshold_rule`` "auto-domain": a bundle's threshold of the domain of the clip's nearest
    reference, as the edge decides), and ``decision_domains`` names whose, per clip.
    """
    sections = {}
    for section in scores.sections:
        rows = scores.section_rows(section)
        clips = [c for c, r in zip(scores.clips, rows, strict=True) if r]
        is_anomaly = np.array([c.is_anomaly for c in clips], dtype=bool)
        values = scores.scores[rows]
        metrics = section_metrics(is_anomaly, values, [c.domain for c in clips],
                                  where=f"{scores.machine} section_{section:02d}")
        fixed = section in scores.thresholds
        threshold = (float(scores.thresholds[section]) if fixed
                     else calibrate_threshold(scores.calibration[section], thresholds))
        decisions = values > _decision_thresholds(scores, rows, threshold)
        metrics.update({
            "threshold": threshold,
            "threshold_from": "fixed" if fixed else "calibration",
            **_decision_rule(scores, rows),
            "n_test": int(rows.sum()),
            "n_references": int(scores.calibration[section].size)
            if section in scores.calibration else None,
            "false_alarm_rate": float(decisions[~is_anomaly].mean()) if (~is_anomaly).any()
            else float("nan"),
            "detection_rate": float(decisions[is_anomaly].mean()) if is_anomaly.any()
            else float("nan"),
        })
        sections[f"{section:02d}"] = metrics
    return {"sections": sections, "summary": summary(sections)}


def _decision_thresholds(scores: MachineScores, rows: np.ndarray, threshold: float
                         ) -> np.ndarray:
    """(n,) threshold of each test clip in ``rows`` (a mask or indices): the clip's own when
    ``scores`` has them, else the section's ``threshold``."""
    if scores.decision_thresholds is None:
        return np.full(scores.scores[rows].shape, threshold)
    return scores.decision_thresholds[rows]


def _decision_rule(scores: MachineScores, rows: np.ndarray) -> dict:
    """results.json's record of how a section's clips were decided."""
    if scores.decision_thresholds is None:
        return {"threshold_rule": "pooled"}
    indices = np.flatnonzero(rows)
    used = {scores.decision_domains[i]: float(scores.decision_thresholds[i]) for i in indices}
    return {"threshold_rule": "auto-domain", "decision_thresholds": dict(sorted(used.items())),
            "decision_domains": {scores.clips[i].name: scores.decision_domains[i]
                                 for i in indices}}


def write_report(out: str | Path, results: list[MachineScores],
                 thresholds: ThresholdConfig | None = None, plots: bool = True,
                 extra: dict | None = None) -> dict:
    """Write DCASE score/decision CSVs, results.json, results.md and PNG plots under ``out``.

    Returns the JSON written. All machine types of one system go into one report.
    """
    thresholds = thresholds or ThresholdConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"system": sorted({r.system for r in results}), "machines": {},
                    "thresholds": thresholds.model_dump(), **(extra or {})}
    all_sections = {}
    for scores in results:
        machine = machine_results(scores, thresholds)
        machine["settings"] = scores.settings
        if scores.explanations:
            machine["explanations"] = scores.explanations
        report["machines"][scores.machine] = machine
        for key, value in machine["sections"].items():
            all_sections[f"{scores.machine}/{key}"] = value
        _write_csvs(out, scores, machine)
        if plots:
            _plot(out, scores, machine)
    report["summary"] = summary(all_sections)
    (out / "results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (out / "results.md").write_text(markdown_table(report))
    logger.info("official score %.4f -> %s", report["summary"]["official"], out)
    return report


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _write_csvs(out: Path, scores: MachineScores, machine: dict) -> None:
    for section in scores.sections:
        rows = np.flatnonzero(scores.section_rows(section))
        threshold = machine["sections"][f"{section:02d}"]["threshold"]
        stem = f"{scores.machine}_section_{section:02d}_test.csv"
        with (out / f"anomaly_score_{stem}").open("w", newline="") as handle:
            writer = csv.writer(handle)
            for i in rows:
                writer.writerow([scores.clips[i].name, repr(float(scores.scores[i]))])
        limits = _decision_thresholds(scores, rows, threshold)
        with (out / f"decision_result_{stem}").open("w", newline="") as handle:
            writer = csv.writer(handle)
            for i, limit in zip(rows, limits, strict=True):
                writer.writerow([scores.clips[i].name, int(scores.scores[i] > limit)])


def _fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.2f}"


def markdown_table(report: dict) -> str:
    """Table 1 of the method: per machine and section AUC source/target and pAUC (%)."""
    lines = [f"# Results: {', '.join(report['system'])}", "",
             "| Machine | Section | AUC source | AUC target | pAUC |",
             "|---|---|---|---|---|"]
    for machine, result in report["machines"].items():
        for section, m in result["sections"].items():
            lines.append(f"| {machine} | {section} | {_fmt(m['auc_source'])} | "
                         f"{_fmt(m['auc_target'])} | {_fmt(m['pauc'])} |")
        s = result["summary"]
        lines.append(f"| {machine} | hmean | {_fmt(s['auc_source'])} | {_fmt(s['auc_target'])} "
                     f"| {_fmt(s['pauc'])} |")
    s = report["summary"]
    lines += [f"| all | hmean | {_fmt(s['auc_source'])} | {_fmt(s['auc_target'])} | "
              f"{_fmt(s['pauc'])} |", "",
              f"Official score (harmonic mean of all AUC and pAUC values): "
              f"**{_fmt(s['official'])}**", ""]
    return "\n".join(lines)


def _plot(out: Path, scores: MachineScores, machine: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    for section in scores.sections:
        rows = scores.section_rows(section)
        clips = [c for c, r in zip(scores.clips, rows, strict=True) if r]
        values = scores.scores[rows]
        y = np.array([c.is_anomaly for c in clips], dtype=bool)
        domains = np.array([c.domain for c in clips])
        threshold = machine["sections"][f"{section:02d}"]["threshold"]
        fig, (roc_ax, hist_ax) = plt.subplots(1, 2, figsize=(10, 4))
        for domain in ("source", "target"):
            keep = y | (domains == domain)
            if (~y[keep]).any():
                fpr, tpr, _ = roc_curve(y[keep], values[keep])
                roc_ax.plot(fpr, tpr, label=domain)
        roc_ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        roc_ax.axvline(0.1, color="grey", linewidth=0.8, linestyle="--")
        roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
                   title=f"ROC {scores.machine} section {section:02d}")
        roc_ax.legend()
        bins = np.histogram_bin_edges(values, bins=20)
        hist_ax.hist(values[~y], bins=bins, alpha=0.6, label="normal")
        hist_ax.hist(values[y], bins=bins, alpha=0.6, label="anomaly")
        hist_ax.axvline(threshold, color="red", label="threshold")
        hist_ax.set(xlabel="anomaly score", ylabel="clips", title="scores")
        hist_ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"plot_{scores.machine}_section_{section:02d}.png", dpi=80)
        plt.close(fig)
