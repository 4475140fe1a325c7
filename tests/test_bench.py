"""The benchmark suite's smoke test: ``bench/daemon.py --quick`` runs every part it has at the
smallest size and writes its results and report, well formed (no figure is checked: timings
are not tests). Slow: part (d) trains a one-epoch model for its PyTorch loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_suite_writes_results_and_report(tmp_path: Path) -> None:
    results, report = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "daemon.py"), "--quick", "--work",
         str(tmp_path / "work"), "--results", str(results), "--out", str(report)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(results.read_text())
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["onnxruntime"]
    streams = figures["streams"]
    assert [row["streams"] for row in streams["rows"]] == [1, 2]
    for row in streams["rows"]:
        assert row["hops_scored"] >= row["hops_expected_at_least"] > 0
        assert row["dropped_blocks"] == 0 and row["rss_mib"] > 0
    assert streams["streams_held"] in (0, 1, 2)
    assert figures["incremental"]["ratio"]["n"] == 5
    assert figures["knn"]["rows"][0]["recall_at_1"] > 0.9  # 1000 references, hnswlib
    dcase = figures["dcase_loop"]  # (d) the daemon vs the DCASE clip loop with PyTorch
    assert dcase["ratio_per_audio_second"]["median"] > 0 and dcase["ratio_per_score"]["n"] == 5
    assert dcase["ratio_per_score"]["median"] > 0
    assert dcase["scores_per_10_s"]["daemon"] > dcase["scores_per_10_s"]["dcase_loop"] > 0
    text = report.read_text()
    for heading in ("## The machine", "## Streams per box, end to end",
                    "## Against what a user would do instead", "## Footprint",
                    "## A larger fleet: a clustered broker",
                    "**(d) The daemon vs the DCASE reference loop.**"):
        assert heading in text
    assert "error" not in json.dumps(figures)


def test_ensemble_rules_replays_what_the_daemon_does(tmp_path: Path) -> None:
    """bench/ensemble_rules.py scores each stream through the bundle's path and replays the
    alarm rule itself: for the bundle's own combination it must find what `asd-edge evaluate
    --streams` (the daemon) found, and a one-member bundle's member alone is the same system."""
    from edge.bundle.enroll import UNSEEN_SYSTEM
    from edge.cli import main
    from edge.synth import synthesize_stream

    enrolled, streams = tmp_path / "enroll.wav", tmp_path / "streams"
    synthesize_stream(enrolled, "fan", 0, seconds=240.0, seed=2, faults=[], take=1)
    synthesize_stream(streams / "fault.wav", "fan", 0, seconds=150.0, fault_start=60.0,
                      fault_seconds=60.0, seed=2, fault_kind="imbalance", severity=1.5)
    models = tmp_path / "models"
    assert main(["enroll", "--file", str(enrolled), "--machine", "fan", "--section", "0",
                 "--models", str(models)]) == 0
    assert main(["evaluate", "--streams", str(streams), "--models", str(models),
                 "--out", str(tmp_path / "report")]) == 0
    daemon = json.loads((tmp_path / "report" / "results.json").read_text())["summary"]["total"]
    out = tmp_path / "combinations.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ensemble_rules.py"), "--models", str(models),
         "--streams", str(streams), "--combinations", f"sum,{UNSEEN_SYSTEM}", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["combinations"]
    for how in ("sum", UNSEEN_SYSTEM):
        total = rows[how]["summary"]["total"]
        assert (total["false_alarms"], total["detected"]) == \
            (daemon["false_alarms"], daemon["detected"]), how
    assert daemon["detected"] == 1  # a fault the replay could have missed too


def test_oracle_separability_finds_an_obvious_fault(tmp_path: Path) -> None:
    """bench/oracle_separability.py: a fan's strong bearing fault stands out of its healthy
    minute for the modulation features, and the result file says so per fault."""
    from edge.synth import synthesize_stream

    enroll, streams = tmp_path / "enroll", tmp_path / "streams"
    synthesize_stream(enroll / "fan.wav", "fan", seconds=60.0, faults=[], seed=2)
    synthesize_stream(streams / "fan_healthy.wav", "fan", seconds=60.0, faults=[], seed=2,
                      take=1)
    synthesize_stream(streams / "fan_fault.wav", "fan", seconds=40.0, fault_start=15.0,
                      fault_seconds=20.0, seed=2, fault_kind="bearing", severity=1.5, take=2)
    out = tmp_path / "oracle.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "oracle_separability.py"),
                    "--enroll", str(enroll), "--streams", str(streams), "--machines", "fan",
                    "--features", "modulation,tonal", "--out", str(out)], check=True,
                   cwd=ROOT, timeout=600)
    result = json.loads(out.read_text())["fan"]
    assert set(result) == {"modulation", "tonal"}
    assert result["modulation"]["of"] == 1
    assert result["modulation"]["faults"]["bearing"] > 1.0
    assert result["modulation"]["separable"] == 1
