"""The attentive neural process baseline (ANP-Boot): trains on normal clips of a tiny real-WAV
data set, separates the fault band, and goes through evaluate, select and export's refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _evaluate_data import make_dataset
from sklearn.metrics import roc_auc_score

from edge.cli import main
from edge.dataset import scan
from edge.errors import BadInput

pytestmark = pytest.mark.slow  # trains ANP runs


@pytest.fixture(scope="module")
def anp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("anp")
    data = make_dataset(root / "data", sections=(0, 1), n_train=8, n_target_train=2,
                        n_test=4, seconds=3.0)
    run = root / "run"
    assert main(["train", "--data", str(data), "--machines", "fan", "--out", str(run),
                 "--objective", "anp", "--epochs", "6", "--batch-size", "32",
                 "--lr", "3e-3", "--val-fraction", "0.25", "--threads", "1",
                 "--no-progress"]) == 0
    return data, run


def test_anp_scores_separate_anomalies_and_report_the_boot_spread(anp_run):
    from training.anp import AttentiveNeuralProcess, load_anp_run
    from training.checkpoint import load_checkpoint
    from training.evaluate.systems import score_anp

    data, run = anp_run
    payload = load_checkpoint(run)
    assert payload["objective"] == "anp" and payload["model_args"]["model"] == "anp"
    assert 10_000 < payload["model_summary"]["parameters"] < 500_000
    assert len(payload["validation_clips"]) == 4  # 2 per section held out for calibration
    loaded = load_anp_run(run)
    assert isinstance(loaded.model, AttentiveNeuralProcess)
    dataset = scan(data)
    result = score_anp(dataset, "fan", loaded, partitions=6, seed=0)
    labels = [c.label == "anomaly" for c in result.clips]
    assert roc_auc_score(labels, result.scores) > 0.9
    spread = result.settings["boot_spread"]
    assert np.isfinite(spread["mean"]) and spread["mean"] > 0
    assert result.settings["calibration"]["in_sample_sections"] == []
    assert all(len(v) == 2 for v in result.calibration.values())
    again = score_anp(dataset, "fan", loaded, partitions=6, seed=0)
    np.testing.assert_array_equal(result.scores, again.scores)  # deterministic for a seed
    other = score_anp(dataset, "fan", loaded, partitions=6, seed=1)
    assert not np.array_equal(result.scores, other.scores)


def test_evaluate_an_anp_run_writes_the_dcase_files(anp_run, tmp_path):
    data, run = anp_run
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--out", str(out),
                 "--partitions", "4", "--no-plots"]) == 0
    for section in ("00", "01"):
        with (out / f"anomaly_score_fan_section_{section}_test.csv").open() as handle:
            rows = list(csv.reader(handle))
        assert len(rows) == 16 and all(np.isfinite(float(v)) for _, v in rows)
        assert (out / f"decision_result_fan_section_{section}_test.csv").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["machines"]["fan"]["settings"]["objective"] == "anp"
    assert results["summary"]["official"] > 0.8


def test_select_makes_the_anp_a_candidate_and_export_maps_it(anp_run, tmp_path):
    from export.build import choice_from_selection

    data, run = anp_run
    out = tmp_path / "selection"
    assert main(["select", "--data", str(data), "--systems", "stats", "--run", f"anp={run}",
                 "--out", str(out)]) == 0
    selection = json.loads((out / "selection.json").read_text())
    entry = selection["machines"]["fan"]
    assert set(entry["candidates"]) == {"stats", "anp:anp"}
    assert "heldout" in entry["candidates"]["anp:anp"]
    # an ensemble with the ANP in it becomes an "anp" member of the bundle, its run recorded
    entry["chosen"] = {"systems": ["stats", "anp:anp"], "weights": [0.5, 0.5]}
    entry["settings"].setdefault("anp:anp", {})["run"] = str(run)
    choice = choice_from_selection(entry, out / "selection.json", "fan")
    kinds = {m.kind: m for m in choice.members}
    assert set(kinds) == {"spectral", "anp"} and kinds["anp"].run == str(run)
    # without a recorded run and no --anp-run, export says what to give
    del entry["settings"]["anp:anp"]["run"]
    with pytest.raises(BadInput, match="anp"):
        choice_from_selection(entry, out / "selection.json", "fan")


def test_an_anp_run_given_where_an_embedding_run_is_needed_is_refused(anp_run, tmp_path,
                                                                      capsys):
    data, run = anp_run
    assert main(["export", "--run", str(run), "--machine", "fan", "--data", str(data),
                 "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "attentive neural process" in err and "embedding run" in err
    assert "Traceback" not in err
    assert not (tmp_path / "models").exists()
