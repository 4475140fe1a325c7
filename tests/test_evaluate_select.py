"""Selection and ensembles: standardised scores, a weight grid, dev vs held-out halves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _evaluate_data import make_dataset

from edge.dataset import Clip
from edge.errors import BadInput
from training.evaluate.select import (
    development_mask,
    main,
    paired_bootstrap,
    select_machine,
    simplex_grid,
    standardized,
)
from training.evaluate.systems import MachineScores


def clips(n_per_group=4, sections=(0, 1)):
    out = []
    for section in sections:
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                for i in range(n_per_group):
                    name = f"section_{section:02d}_{domain}_test_{label}_{i}.wav"
                    out.append(Clip(path=Path("/x") / name,
                                    machine="fan", section=section, split="test", index=f"{i:04d}",
                                    domain=domain, label=label))
    return out


def system(name, test, scores, calibration):
    return MachineScores(name, "fan", test, np.asarray(scores, float), calibration)


def test_scores_are_standardised_per_section_on_normal_references():
    test = clips(1)
    calibration = {0: np.array([1.0, 3.0]), 1: np.array([10.0, 30.0])}
    z = standardized(system("a", test, [2.0] * 4 + [20.0] * 4, calibration))
    np.testing.assert_allclose(z, 0.0)


def test_dev_and_heldout_halves_split_every_group():
    test = clips(4)
    dev = development_mask(test, seed=3)
    assert dev.sum() == len(test) // 2
    for section in (0, 1):
        for label in ("normal", "anomaly"):
            rows = [i for i, c in enumerate(test) if c.section == section and c.label == label]
            assert dev[rows].sum() == len(rows) // 2
    with pytest.raises(BadInput, match="at least 2"):
        development_mask(clips(1))


def test_an_ensemble_of_complementary_systems_beats_each_member():
    rng = np.random.default_rng(0)
    test = clips(8)
    anomaly = np.array([c.is_anomaly for c in test])
    target = np.array([c.domain == "target" for c in test])
    # System a sees source anomalies only, system b target anomalies only.
    a = rng.normal(size=len(test)) + 4.0 * (anomaly & ~target)
    b = rng.normal(size=len(test)) + 4.0 * (anomaly & target)
    calibration = {0: rng.normal(size=50), 1: rng.normal(size=50)}
    result = select_machine([system("a", test, a, calibration),
                             system("b", test, b, calibration)], steps=4)
    assert result["chosen"]["systems"] == ["a", "b"]
    assert result["dev"] > max(result["candidates"][n]["dev"] for n in ("a", "b"))
    assert result["heldout"] > max(result["candidates"][n]["heldout"] for n in ("a", "b"))


def test_ties_go_to_the_simpler_system_listed_first():
    test = clips(2)
    perfect = [float(c.is_anomaly) for c in test]
    calibration = {0: np.array([0.0, 0.1]), 1: np.array([0.0, 0.1])}
    result = select_machine([system("stats", test, perfect, calibration),
                             system("fancy", test, perfect, calibration)])
    assert result["chosen"] == {"systems": ["stats"], "weights": [1.0]}
    assert simplex_grid(3, 2).sum(1).tolist() == [1.0] * 6


def test_the_selection_command_records_the_choice_for_export(tmp_path):
    data = make_dataset(tmp_path / "data", sections=(0,), n_train=6, n_target_train=2,
                        n_test=4)
    assert main(["--data", str(data), "--systems", "stats,bandenergy",
                 "--out", str(tmp_path / "sel")]) == 0
    selection = json.loads((tmp_path / "sel" / "selection.json").read_text())
    fan = selection["machines"]["fan"]
    assert fan["chosen"]["systems"] and abs(sum(fan["chosen"]["weights"]) - 1.0) < 1e-9
    assert set(fan["standardization"]) == set(fan["chosen"]["systems"])
    assert fan["heldout"] >= 0.9 and "| fan | stats |" in (tmp_path / "sel" /
                                                            "selection.md").read_text()


@pytest.mark.slow  # evaluates data sets end to end
def test_the_comparison_table_spans_data_sets_with_a_spread(tmp_path):
    from training.evaluate.compare import main as compare_main

    sets = [make_dataset(tmp_path / f"d{seed}", sections=(0,), n_train=6, n_target_train=2,
                         n_test=4, seed=seed) for seed in (0, 1)]
    out = tmp_path / "docs" / "RESULTS.md"
    assert compare_main(["--data", str(sets[0]), "--data", str(sets[1]),
                         "--systems", "stats,bandenergy", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| stats | " in table and "±" in table and "python -m training.evaluate.compare" in table
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["systems"]["stats"]["all"]) == 2
    assert len(result["selection"]["fan"]) == 2


def test_the_selection_check_repeats_splits_and_reports_intervals(tmp_path):
    from training.evaluate.compare import main as compare_main

    data = make_dataset(tmp_path / "d", sections=(0,), n_train=6, n_target_train=2, n_test=4)
    out = tmp_path / "RESULTS.md"
    assert compare_main(["--data", str(data), "--systems", "stats,bandenergy", "--splits", "3",
                         "--bootstrap", "50", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["selection"]["fan"]
    assert [r["split"] for r in rows] == [0, 1, 2]
    for row in rows:
        for key in ("vs_hindsight", "vs_best_on_dev", "vs_stats"):
            assert row[key]["low"] <= row[key]["delta"] <= row[key]["high"]
        # the hindsight best is the best single system on the held-out half
        assert row["best_single_heldout"] >= row["vs_stats"]["heldout"]
    assert "| all | 3 |" in out.read_text()
    with np.load(tmp_path / "RESULTS_scores" / "0_fan.npz") as saved:  # for other rules
        assert saved["systems"].tolist() == ["stats", "bandenergy"]
        assert saved["z"].shape == (len(saved["clips"]), 2) and saved["anomaly"].any()


def test_a_paired_bootstrap_separates_a_real_difference_from_none():
    rng = np.random.default_rng(1)
    test = clips(10)
    anomaly = np.array([c.is_anomaly for c in test], dtype=float)
    good = 3.0 * anomaly + rng.normal(size=len(test))
    poor = 0.3 * anomaly + rng.normal(size=len(test))
    everything = np.ones(len(test), dtype=bool)
    better = paired_bootstrap(test, good, poor, everything, n_boot=100)
    assert better["delta"] > 0.2 and better["low"] > 0
    same = paired_bootstrap(test, good, good, everything, n_boot=20)
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0}


def test_an_ensemble_must_earn_its_members_on_the_development_half():
    """A pure-noise member that wins 0.017 on the development half is dropped by the margin."""
    rng = np.random.default_rng(0)
    test = clips(8)
    anomaly = np.array([c.is_anomaly for c in test], dtype=float)
    good = anomaly * 1.5 + rng.normal(size=len(test))
    noise = rng.normal(size=len(test))
    calibration = {0: rng.normal(size=50), 1: rng.normal(size=50)}
    systems = [system("stats", test, good, calibration),
               system("noise", test, noise, calibration)]
    free = select_machine(systems, steps=4, margin=0.0)
    assert free["chosen"]["systems"] == ["stats", "noise"]  # the grid search alone takes it
    assert 0 < free["dev"] - free["candidates"]["stats"]["dev"] < 0.02
    kept = select_machine(systems, steps=4)  # the default margin, 0.02
    assert kept["chosen"] == {"systems": ["stats"], "weights": [1.0]}
    assert kept["margin"] == 0.02


def test_the_margin_shrinks_as_the_development_half_grows():
    from training.evaluate.select import noise_margin

    small, large = clips(8), clips(32)  # 4 and 16 clips per group in the development half
    assert noise_margin(small, development_mask(small)) == pytest.approx(0.02)
    assert noise_margin(large, development_mask(large)) == pytest.approx(0.01)
    rng = np.random.default_rng(0)
    calibration = {0: rng.normal(size=50), 1: rng.normal(size=50)}
    anomaly = np.array([c.is_anomaly for c in large], dtype=float)
    systems = [system(n, large, anomaly + rng.normal(size=len(large)), calibration)
               for n in ("stats", "other")]
    assert select_machine(systems)["margin"] == pytest.approx(0.01)
    assert select_machine(systems, margin=0.05)["margin"] == 0.05


def test_a_bad_margin_is_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), "--systems", "stats", "--margin", "lots",
              "--out", str(tmp_path / "sel")])
    assert exit_info.value.code == 2
    assert "'lots' is not a number; give auto or e.g. 0.02" in capsys.readouterr().err
