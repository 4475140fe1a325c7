"""``asd-edge evaluate`` end to end on real WAV files: DCASE files, report, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _evaluate_data import make_dataset

from edge.cli import main
from edge.scoring.thresholds import ThresholdConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), machines=("fan", "valve"))


@pytest.mark.slow  # every system end to end, with plots (the gmm test below is quick)
@pytest.mark.parametrize("system", ["stats", "bandenergy"])
def test_model_free_systems_write_the_dcase_files_and_a_report(data, tmp_path, system, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--system", system, "--out", str(out)]) == 0
    assert "official score" in capsys.readouterr().out
    for machine in ("fan", "valve"):
        for section in ("00", "01"):
            stem = f"{machine}_section_{section}_test.csv"
            with (out / f"anomaly_score_{stem}").open() as handle:
                scores = list(csv.reader(handle))
            with (out / f"decision_result_{stem}").open() as handle:
                decisions = list(csv.reader(handle))
            assert len(scores) == len(decisions) == 16  # 2 domains x (4 normal + 4 anomaly)
            assert scores[0][0].startswith(f"section_{section}_")  # no header row
            assert {row[1] for row in decisions} <= {"0", "1"}
            anomalous = [float(v) for n, v in scores if "_anomaly_" in n]
            normal = [float(v) for n, v in scores if "_normal_" in n]
            assert min(anomalous) > max(normal)  # the band of noise is found
            assert (out / f"plot_{machine}_section_{section}.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["official"] > 0.9
    section = results["machines"]["fan"]["sections"]["00"]
    assert section["false_alarm_rate"] <= 0.5 and section["detection_rate"] == 1.0
    table = (out / "results.md").read_text()
    assert "| fan | 00 |" in table and "Official score" in table


def test_gmm_backend_and_a_false_alarm_rate_threshold(data, tmp_path):
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--system", "stats", "--backend", "gmm",
                 "--threshold", "quantile", "--quantile", "0.95", "--machines", "fan",
                 "--out", str(out), "--no-plots"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["machines"]) == ["fan"]
    assert results["machines"]["fan"]["settings"]["scorer"]["backend"]["type"] == "gmm"
    assert results["thresholds"] == {"method": "quantile", "quantile": 0.95}
    assert results["summary"]["official"] > 0.9


def test_a_test_folder_without_labels_is_refused(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", sections=(0,), n_train=4, n_test=1)
    for path in (root / "fan" / "test").iterdir():
        path.rename(path.with_name(f"section_00_{path.name.split('_')[5]}.wav"))
    code = main(["evaluate", "--data", str(root), "--system", "stats",
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "without label or domain" in capsys.readouterr().err


def test_a_section_with_no_references_is_refused(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", sections=(0, 1), n_train=4, n_test=1)
    for path in (root / "fan" / "train").glob("section_01_*"):
        path.unlink()
    code = main(["evaluate", "--data", str(root), "--system", "stats",
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "section(s) 01" in capsys.readouterr().err


def test_an_unknown_machine_type_is_refused(data, tmp_path, capsys):
    code = main(["evaluate", "--data", str(data), "--system", "stats", "--machines", "pump",
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "pump" in capsys.readouterr().err


class ProjectionEmbedder:
    """A numpy network stand-in at our own seam (the ``Embedder`` protocol ONNX will fill)."""

    def __init__(self):
        from edge.features import DEFAULT_FRONT_END, Patching

        self.front_end = DEFAULT_FRONT_END
        self.patching = Patching(patch_frames=32, patch_hop=16)
        # Band averages (16 and 8 bands): a fixed "network" that sees the spectrum's shape.
        self.section_weights = self._bands(self.front_end.n_bins, 16)
        self.attribute_weights = self._bands(self.front_end.n_bins, 8)

    @staticmethod
    def _bands(n_bins, n_bands):
        return np.eye(n_bands)[np.arange(n_bins) * n_bands // n_bins] / (n_bins / n_bands)

    def embed(self, patches):
        return patches.mean(2) @ self.section_weights, patches.std(2) @ self.attribute_weights


def test_any_embedder_scores_through_the_same_path(data):
    from edge.dataset import scan
    from training.evaluate.report import machine_results
    from training.evaluate.systems import score_embedder

    dataset, embedder = scan(data), ProjectionEmbedder()
    cache: dict = {}
    concat = score_embedder(dataset, "fan", embedder, "proj", "concat", cache=cache)
    assert machine_results(concat, ThresholdConfig())["summary"]["official"] > 0.8
    sections = score_embedder(dataset, "fan", embedder, "proj", "sections", cache=cache)
    weighted = score_embedder(dataset, "fan", embedder, "proj", "weighted", weight=1.0,
                              cache=cache)
    np.testing.assert_allclose(weighted.scores, sections.scores)
    shares = concat.subspaces[concat.clips[0].name]
    assert 0.0 <= shares["section_share"] <= 1.0
