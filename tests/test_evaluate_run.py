"""``asd-edge evaluate --run``: a real (tiny) trained run through every inference variant."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _evaluate_data import make_dataset, train_tiny_run

from edge.cli import main

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), n_test=2)


def read_scores(out, section="00"):
    with (out / f"anomaly_score_fan_section_{section}_test.csv").open() as handle:
        return {name: float(value) for name, value in csv.reader(handle)}


def test_every_variant_scores_the_test_clips(trained, tmp_path):
    data, run = trained
    scores = {}
    for variant, extra in [("sections", []), ("weighted", ["--weight", "1.0"])]:
        out = tmp_path / variant
        args = ["evaluate", "--data", str(data), "--run", str(run), "--variant", variant,
                "--out", str(out), "--no-plots", *extra]
        assert main(args) == 0
        scores[variant] = read_scores(out)
        results = json.loads((out / "results.json").read_text())
        assert results["machines"]["fan"]["settings"]["variant"] == variant
        assert np.isfinite(results["summary"]["official"])
    assert len(scores["sections"]) == 8
    # w = 1 puts all weight on the section subspace: the Sections variant's scores.
    np.testing.assert_allclose([scores["weighted"][k] for k in scores["sections"]],
                               list(scores["sections"].values()), rtol=1e-6)
    from edge.dataset import scan
    from training.evaluate.systems import score_embedder
    from training.infer import load_run

    loaded, dataset, cache = load_run(run), scan(data), {}
    others = {variant: score_embedder(dataset, "fan", loaded, variant, variant, cache=cache)
              for variant in ("concat", "attributes")}
    assert all(np.isfinite(s.scores).all() and s.scores.shape == (16,) for s in others.values())
    assert not np.allclose(others["concat"].scores, others["attributes"].scores)


def test_explanations_of_a_run_split_the_distance_between_subspaces(trained, tmp_path):
    data, run = trained
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--explain",
                 "--backend", "gmm", "--out", str(out)]) == 0
    entry = next(iter(json.loads((out / "results.json").read_text())["machines"]["fan"][
        "explanations"].values()))
    shares = entry["subspaces"]
    assert shares["driven_by"] in ("section", "attribute")
    assert shares["section_share"] + shares["attribute_share"] == pytest.approx(1.0)
    assert (out / "plot_fan_section_00.png").is_file()


def test_a_run_of_another_machine_type_is_refused(trained, tmp_path, capsys):
    _, run = trained
    other = make_dataset(tmp_path / "valve", machines=("valve",), sections=(0,), n_train=2,
                         n_target_train=1, n_test=1, seconds=3.0)
    assert main(["evaluate", "--data", str(other), "--run", str(run),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "trained on fan" in err and "valve" in err
