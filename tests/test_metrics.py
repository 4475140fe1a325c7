"""The official DCASE 2022 Task 2 metric against a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BadInput
from training.evaluate.metrics import official_score, section_metrics, summary

# Source normals 0.1..0.4, target normals 0.5, 0.6, anomalies 0.35, 0.7, 0.8.
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.35, 0.7, 0.8])
IS_ANOMALY = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
DOMAINS = ["source"] * 4 + ["target"] * 2 + ["source", "target", "source"]


def test_section_metrics_match_the_hand_computed_case():
    m = section_metrics(IS_ANOMALY, SCORES, DOMAINS)
    # AUC(source): every anomaly (whatever its domain) against the 4 source normals:
    # 0.35 beats 3 of 4, 0.7 and 0.8 beat all -> 11 / 12.
    assert m["auc_source"] == pytest.approx(11 / 12)
    # AUC(target): every anomaly against the 2 target normals: 0 + 2 + 2 of 6.
    assert m["auc_target"] == pytest.approx(4 / 6)
    # pAUC over all 9 clips, max_fpr 0.1: the first normal comes after two anomalies, so the
    # ROC sits at TPR 2/3 from FPR 0 to 1/6: partial area 0.1 * 2/3. sklearn (and hence the
    # DCASE evaluator) reports it McClish-standardised: 0.5 * (1 + (A - 0.005) / (0.1 - 0.005)).
    partial = 0.1 * 2 / 3
    assert m["pauc"] == pytest.approx(0.5 * (1 + (partial - 0.005) / (0.1 - 0.005)))


def test_official_score_is_the_harmonic_mean_of_every_auc_and_pauc():
    first = section_metrics(IS_ANOMALY, SCORES, DOMAINS)
    second = {"auc_source": 1.0, "auc_target": 0.5, "pauc": 0.8}
    values = [first["auc_source"], first["auc_target"], first["pauc"], 1.0, 0.5, 0.8]
    expected = len(values) / sum(1 / v for v in values)
    assert official_score([first, second]) == pytest.approx(expected)
    assert summary({"a": first, "b": second})["official"] == pytest.approx(expected)
    assert summary({"a": first, "b": second})["auc_target"] == pytest.approx(2 / (1.5 + 2))


def test_a_perfect_and_an_inverted_detector():
    perfect = section_metrics(IS_ANOMALY, IS_ANOMALY.astype(float) + 0.01 * SCORES, DOMAINS)
    assert perfect == {"auc_source": 1.0, "auc_target": 1.0, "pauc": 1.0}
    inverted = section_metrics(IS_ANOMALY, -IS_ANOMALY.astype(float), DOMAINS)
    assert inverted["auc_source"] == 0.0 and official_score([inverted]) == 0.0


def test_a_section_without_anomalies_is_refused_with_the_fix():
    with pytest.raises(BadInput, match="both normal and anomalous"):
        section_metrics(np.zeros(4, bool), np.arange(4.0), ["source"] * 4)


@pytest.mark.slow  # many random cases against scikit-learn
def test_the_numpy_auc_equals_sklearn_with_ties_and_partial_areas():
    """roc_auc is the fast path of every selection; it must be sklearn's number exactly."""
    from sklearn.metrics import roc_auc_score

    from training.evaluate.metrics import roc_auc

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(4, 60))
        y = rng.random(n) < rng.uniform(0.2, 0.8)
        if y.all() or not y.any():
            continue
        s = rng.normal(size=n) if trial % 2 else rng.integers(0, 5, n).astype(float)  # ties
        for max_fpr in (None, 0.1, 0.05, 0.5):
            assert roc_auc(y, s, max_fpr) == pytest.approx(
                roc_auc_score(y, s, max_fpr=max_fpr), abs=1e-12)


def test_the_weight_grid_is_every_composition_in_lexicographic_order():
    import itertools

    from training.evaluate.select import simplex_grid

    for n, steps in ((1, 3), (3, 4), (5, 2)):
        expected = [c for c in itertools.product(range(steps + 1), repeat=n) if sum(c) == steps]
        np.testing.assert_array_equal(simplex_grid(n, steps) * steps, expected)
    assert simplex_grid(12, 4).shape == (1365, 12)  # C(15, 4): no 5^12 enumeration
