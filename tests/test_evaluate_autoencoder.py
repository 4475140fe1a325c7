"""The DCASE 2022 autoencoder baseline: its shape, its features, and that it detects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _evaluate_data import make_dataset

from edge.cli import main
from training.autoencoder import AutoencoderConfig, build_autoencoder, frame_vectors


def test_the_network_is_the_baselines_640_128x4_8_128x4_640():
    from torch import nn

    model = build_autoencoder(AutoencoderConfig(), 640)
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert widths == [(640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
                      (8, 128), (128, 128), (128, 128), (128, 128), (128, 640)]


def test_vectors_stack_five_consecutive_frames():
    log_mel = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)  # (F=3, T=7)
    vectors = frame_vectors(log_mel, n_frames=5)
    assert vectors.shape == (3, 15)
    np.testing.assert_array_equal(vectors[1], log_mel[:, 1:6].T.reshape(-1))


@pytest.mark.slow  # trains the autoencoder
def test_evaluate_autoencoder_scores_anomalies_above_normals(tmp_path):
    import torch

    torch.set_num_threads(1)
    data = make_dataset(tmp_path / "data", sections=(0,), n_train=6, n_target_train=2,
                        n_test=3)
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(data), "--system", "autoencoder", "--epochs", "8",
                 "--no-plots", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["official"] > 0.8
    settings = results["machines"]["fan"]["settings"]
    assert settings["autoencoder"]["epochs"] == 8 and settings["held_out"] == 1
    rows = (out / "anomaly_score_fan_section_00_test.csv").read_text().splitlines()
    assert len(rows) == 12
