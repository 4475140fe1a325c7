"""Evaluation through the deployed path, and export of the system the selection chose.

A tiny run is trained and exported; ``asd-edge evaluate --bundle`` must give the official score
of ``evaluate --run`` (same variant, backend, pooling) within 0.005 and decide with the
bundle's own thresholds as the edge does (each clip with its nearest reference's domain's); a
``selection.json`` choosing an ensemble ships that ensemble.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _evaluate_data import make_dataset, train_tiny_run

from edge.audio import read_audio
from edge.bundle.load import load_bundle
from edge.cli import main
from edge.dataset import scan

pytestmark = pytest.mark.slow  # trains and exports a model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle-eval")
    data, run = train_tiny_run(root, n_test=3)
    models = root / "models"
    # a threshold quantile other than evaluate's default, so the bundle's thresholds show
    assert main(["export", "--run", str(run), "--machine", "fan", "--data", str(data),
                 "--out", str(models), "--threshold-quantile", "0.6"]) == 0
    return data, run, models / "fan"


def read_csv(path):
    with path.open() as handle:
        return {name: float(value) for name, value in csv.reader(handle)}


def test_bundle_evaluation_matches_the_run_and_uses_the_bundle_thresholds(trained, tmp_path):
    data, run, bundle_dir = trained
    by_run, by_bundle = tmp_path / "run", tmp_path / "bundle"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--variant", "concat",
                 "--backend", "knn", "--pooling", "mean", "--out", str(by_run),
                 "--no-plots"]) == 0
    assert main(["evaluate", "--data", str(data), "--bundle", str(bundle_dir),
                 "--out", str(by_bundle)]) == 0
    run_report = json.loads((by_run / "results.json").read_text())
    bundle_report = json.loads((by_bundle / "results.json").read_text())
    assert abs(run_report["summary"]["official"] - bundle_report["summary"]["official"]) < 0.005
    system = load_bundle(bundle_dir, device="cpu").system
    thresholds = system.thresholds
    test_clips = {c.name: c for c in scan(data).select(machine="fan", split="test")}
    used_domains = set()
    for section in ("00", "01"):
        stem = f"fan_section_{section}_test.csv"
        scores = read_csv(by_bundle / f"anomaly_score_{stem}")
        run_scores = read_csv(by_run / f"anomaly_score_{stem}")
        assert len(scores) == 12 and scores.keys() == run_scores.keys()
        np.testing.assert_allclose(list(scores.values()), list(run_scores.values()), atol=1e-3)
        threshold = thresholds[int(section)].threshold
        entry = bundle_report["machines"]["fan"]["sections"][section]
        assert entry["threshold"] == pytest.approx(threshold)
        assert entry["threshold_from"] == "fixed"
        assert run_report["machines"]["fan"]["sections"][section]["threshold"] != \
            pytest.approx(threshold, rel=1e-3)
        # each clip is decided as the edge's default (domain: auto) decides a window: with the
        # threshold of its nearest reference's domain, the pooled one where there is none
        assert entry["threshold_rule"] == "auto-domain"
        decisions = read_csv(by_bundle / f"decision_result_{stem}")
        expected, domains = {}, {}
        for name, value in scores.items():
            assessed = system.assess_clip(read_audio(test_clips[name].path), int(section))
            assert assessed.score == pytest.approx(value, rel=1e-5)
            levels = thresholds[int(section)]
            expected[name] = float(value > levels.for_domain(assessed.domain).threshold)
            domains[name] = assessed.domain if assessed.domain in levels.domains else "pooled"
        assert decisions == expected
        assert entry["decision_domains"] == domains
        used_domains |= set(domains.values())
        normal = [decisions[n] for n in decisions if "_normal_" in n]
        assert entry["false_alarm_rate"] == pytest.approx(np.mean(normal))
    # the tiny bundle calibrates the source domain (8 clips per section) but not the target
    # domain (2 clips): clips nearest a target reference fall back to the pooled threshold
    assert {d for t in thresholds.values() for d in t.domains} == {"source"}
    assert used_domains == {"source", "pooled"}
    assert (by_bundle / "plot_fan_section_00.png").is_file()


def test_a_bundle_of_a_machine_type_the_data_lacks_is_refused(trained, tmp_path, capsys):
    _, _, bundle_dir = trained
    valve = make_dataset(tmp_path / "valve", machines=("valve",), sections=(0,), n_train=2,
                         n_target_train=1, n_test=1, seconds=3.0)
    assert main(["evaluate", "--data", str(valve), "--bundle", str(bundle_dir),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "for machine type fan" in err and "valve" in err
    assert not (tmp_path / "r").exists()


def selection_with(tmp_path, data, run, systems, weights):
    """A real selection.json of this run and the stats detector, its choice replaced."""
    from training.evaluate.select import main as select_main

    out = tmp_path / "selection"
    assert select_main(["--data", str(data), "--systems", "stats", "--run", f"tiny={run}",
                        "--out", str(out)]) == 0
    selection = json.loads((out / "selection.json").read_text())
    fan = selection["machines"]["fan"]
    assert {"tiny:concat", "tiny:weighted@0.25", "stats"} <= set(fan["candidates"])
    fan["chosen"] = {"systems": systems, "weights": weights}
    # settings as the selection records them for its chosen systems
    recorded = {"tiny:concat": {"variant": "concat", "weight": 0.5, "pooling": "mean"},
                "tiny:weighted@0.25": {"variant": "weighted", "weight": 0.25, "pooling": "mean"}}
    fan["settings"] = {name: fan["settings"].get(name, recorded.get(name, {}))
                       for name in systems}
    (out / "selection.json").write_text(json.dumps(selection))
    return out / "selection.json"


def test_export_ships_the_ensemble_the_selection_chose(trained, tmp_path, capsys):
    data, run, _ = trained
    chosen = ["tiny:concat", "tiny:weighted@0.25", "stats"]
    selection = selection_with(tmp_path, data, run, chosen, [0.5, 0.25, 0.25])
    models = tmp_path / "models"
    assert main(["export", "--run", str(run), "--machine", "fan", "--data", str(data),
                 "--out", str(models), "--selection", str(selection)]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(models / "fan")]) == 0
    assert "embedding-concat (x0.5), embedding-weighted-0.25 (x0.25), stats (x0.25)" in \
        capsys.readouterr().out
    bundle = load_bundle(models / "fan", device="cpu")
    members = {m.name: m for m in bundle.system.members}
    assert [(m.name, m.kind, m.weight) for m in bundle.system.members] == [
        ("embedding-concat", "embedding", 0.5), ("embedding-weighted-0.25", "embedding", 0.25),
        ("stats", "spectral", 0.25)]
    assert members["embedding-weighted-0.25"].variant == "weighted"
    assert members["embedding-weighted-0.25"].variant_weight == 0.25
    assert bundle.manifest.system.systems == chosen
    clip = next(c for c in scan(data).select(machine="fan", split="test") if c.is_anomaly)
    score, member_scores = bundle.system.score_clip(read_audio(clip.path), clip.section)
    assert np.isfinite(score) and set(member_scores) == set(members)
    assert score == pytest.approx(sum(
        m.weight * m.standardise(member_scores[m.name], clip.section)
        for m in bundle.system.members))


def test_an_autoencoder_choice_is_refused_and_system_overrides_it(trained, tmp_path, capsys):
    data, run, _ = trained
    selection = selection_with(tmp_path, data, run, ["autoencoder", "stats"], [0.5, 0.5])
    args = ["export", "--run", str(run), "--machine", "fan", "--data", str(data),
            "--out", str(tmp_path / "models"), "--selection", str(selection)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "autoencoder, which a bundle cannot ship" in err and "--system" in err
    assert not (tmp_path / "models").exists()
    assert main([*args, "--system", "stats"]) == 0
    bundle = load_bundle(tmp_path / "models" / "fan", device="cpu")
    assert [m.name for m in bundle.system.members] == ["stats"]
    assert bundle.manifest.system.chosen_by == "--system"


def test_a_selection_made_with_std_pooling_ships_std_pooling(trained, tmp_path):
    """The pooling is a per-machine setting: chosen with the system, recorded, exported."""
    from training.evaluate.select import main as select_main

    data, run, _ = trained
    out = tmp_path / "selection"
    assert select_main(["--data", str(data), "--systems", "", "--run", f"tiny={run}",
                        "--pooling", "std", "--out", str(out)]) == 0
    selection = json.loads((out / "selection.json").read_text())
    fan = selection["machines"]["fan"]
    assert selection["pooling"] == "std"
    assert {s["pooling"] for s in fan["settings"].values()} == {"std"}
    models = tmp_path / "models"
    assert main(["export", "--run", str(run), "--machine", "fan", "--data", str(data),
                 "--out", str(models), "--selection", str(out / "selection.json")]) == 0
    bundle = load_bundle(models / "fan", device="cpu")
    assert [m.pooling for m in bundle.system.members] == ["std"] * len(fan["chosen"]["systems"])
