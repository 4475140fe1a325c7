"""Explanations: the reported bands and spans contain a fault confined to one band."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _evaluate_data import ANOMALY_BAND_HZ, machine_clip, make_dataset
from scipy.signal import butter, sosfilt

from edge.audio import SAMPLE_RATE
from edge.cli import main
from edge.features import LOG_MEL_FRONT_END
from edge.scoring.explain import explain_spectra, subspace_shares


def overlaps(band, low, high):
    return band["low_hz"] < high and band["high_hz"] > low


def test_a_burst_in_one_band_is_reported_in_that_band_and_at_that_time():
    rng = np.random.default_rng(0)
    normal = machine_clip(rng, 0, "1", anomaly=False, seconds=3.0)
    clip = machine_clip(rng, 0, "1", anomaly=False, seconds=3.0)
    sos = butter(4, (5000, 5600), btype="bandpass", fs=SAMPLE_RATE, output="sos")
    burst = 0.3 * sosfilt(sos, rng.standard_normal(clip.size))
    start, end = int(1.5 * SAMPLE_RATE), int(2.0 * SAMPLE_RATE)
    clip[start:end] += burst[start:end].astype(np.float32)
    result = explain_spectra(clip, normal, LOG_MEL_FRONT_END)
    assert overlaps(result["bands"][0], 5000, 5600)
    top = result["spans"][0]
    assert 1.4 <= top["start_s"] and top["end_s"] <= 2.1


def test_a_change_in_the_attribute_embedding_is_blamed_on_the_attributes():
    rng = np.random.default_rng(1)
    section, attribute = rng.standard_normal(16), rng.standard_normal(8)
    moved = attribute + 2.0 * rng.standard_normal(8)
    shares = subspace_shares(section, moved, section + 0.01, attribute)
    assert shares["driven_by"] == "attribute" and shares["attribute_share"] > 0.9
    assert abs(shares["section_share"] + shares["attribute_share"] - 1.0) < 1e-12


@pytest.mark.slow  # evaluate --explain end to end, with plots
def test_evaluate_explain_names_the_faulty_band_and_the_nearest_normal_clip(tmp_path):
    data = make_dataset(tmp_path / "data", sections=(0,), n_train=8, n_test=3)
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--system", "stats", "--explain",
                 "--out", str(out)]) == 0
    explanations = json.loads((out / "results.json").read_text())["machines"]["fan"][
        "explanations"]
    anomalies = [e for name, e in explanations.items() if "_anomaly_" in name]
    assert len(anomalies) == 6
    for entry in anomalies:
        assert overlaps(entry["bands"][0], *ANOMALY_BAND_HZ)
        assert "_train_normal_" in entry["nearest"]["file"]
        assert set(entry["nearest"]["attributes"]) == {"speed"}
    pngs = list(out.glob("explain_fan_*.png"))
    assert len(pngs) == 1 and "_anomaly_" in pngs[0].name  # the top-scoring clip is plotted
    chosen = next(name for name in explanations if "_target_test_normal_" in name)
    assert main(["evaluate", "--data", str(data), "--system", "stats", "--explain",
                 "--explain-clip", chosen, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / f"explain_fan_{chosen[:-4]}.png").stat().st_size > 1000
