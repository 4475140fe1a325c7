"""The comparison table reports AUC(source) and AUC(target) beside the official score."""

from __future__ import annotations

import json

import pytest
from _evaluate_data import make_dataset

from training.evaluate.compare import main as compare_main

pytestmark = pytest.mark.slow  # evaluates two data sets end to end


def test_the_table_has_source_and_target_auc_per_machine_and_overall(tmp_path):
    sets = [make_dataset(tmp_path / f"d{seed}", sections=(0,), n_train=6, n_target_train=2,
                         n_test=4, seed=seed) for seed in (0, 1)]
    out = tmp_path / "RESULTS.md"
    assert compare_main(["--data", str(sets[0]), "--data", str(sets[1]),
                         "--systems", "stats", "--out", str(out)]) == 0
    table = out.read_text()
    assert "## AUC(source)" in table and "## AUC(target)" in table
    result = json.loads(out.with_suffix(".json").read_text())
    for key in ("auc_source", "auc_target"):
        values = result["domains"][key]["stats"]
        assert set(values) == {"fan", "all"} and len(values["all"]) == 2
        assert all(0.0 <= v <= 1.0 for v in values["fan"])
    # the official score is a harmonic mean with pAUC: never above both domain AUCs
    official = result["systems"]["stats"]["fan"][0]
    assert official <= max(result["domains"]["auc_source"]["stats"]["fan"][0],
                           result["domains"]["auc_target"]["stats"]["fan"][0]) + 1e-9
