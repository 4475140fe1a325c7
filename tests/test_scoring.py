"""edge.scoring: backends (real hnswlib), variants, references, thresholds, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from edge.errors import BadInput
from edge.scoring.backends import GmmConfig, KnnBackend, KnnConfig, fit_gmm, load_backend
from edge.scoring.scorer import (
    ScorerConfig,
    SectionScorer,
    cross_fit_scores,
    pool,
    section_folds,
    variant_parts,
)
from edge.scoring.thresholds import ThresholdConfig, calibrate_threshold, section_thresholds


def clustered(rng, n, dim, n_clusters=8, spread=0.3):
    centres = rng.standard_normal((n_clusters, dim))
    return (centres[rng.integers(n_clusters, size=n)]
            + spread * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_hnswlib_and_exact_search_give_the_same_scores(metric):
    rng = np.random.default_rng(0)
    refs, queries = clustered(rng, 600, 32), clustered(rng, 50, 32)
    exact = KnnBackend(KnnConfig(metric=metric, k=3, exact_below=10_000), refs)
    indexed = KnnBackend(KnnConfig(metric=metric, k=3, exact_below=100, ef=400), refs)
    assert exact.index is None and indexed.index is not None
    np.testing.assert_allclose(indexed.score(queries), exact.score(queries), rtol=1e-4,
                               atol=1e-4)


def test_a_saved_hnswlib_index_reloads_with_its_space_and_ef(tmp_path):
    rng = np.random.default_rng(1)
    refs, queries = clustered(rng, 300, 16), clustered(rng, 20, 16)
    config = ScorerConfig(backend=KnnConfig(metric="cosine", exact_below=10, ef=77))
    scorer = SectionScorer(config, [1.0]).fit([refs], np.zeros(300, int), ["source"] * 300)
    scorer.save(tmp_path)
    manifest = json.loads((tmp_path / "scorer.json").read_text())
    info = manifest["sections"]["00"][0]["backend"]
    assert info["space"] == "cosine" and info["config"]["ef"] == 77 and info["dim"] == 16
    assert (tmp_path / info["index"]).is_file()
    reloaded = SectionScorer.load(tmp_path)
    np.testing.assert_allclose(reloaded.score([queries], np.zeros(20, int)),
                               scorer.score([queries], np.zeros(20, int)), atol=1e-6)
    backend = load_backend(info, tmp_path)
    assert backend.index.ef == 77


def test_gmm_one_full_component_is_the_gaussian_negative_log_likelihood():
    rng = np.random.default_rng(2)
    x = rng.multivariate_normal([1.0, -2.0, 0.5], np.diag([1.0, 0.5, 2.0]), size=400)
    config = GmmConfig(n_components=1, covariance="full", reg_covar=1e-3)
    gmm = fit_gmm(config, x)
    cov = np.cov(x, rowvar=False, bias=True) + 1e-3 * np.eye(3)
    queries = rng.standard_normal((5, 3))
    expected = -stats.multivariate_normal(x.mean(0), cov).logpdf(queries)
    np.testing.assert_allclose(gmm.score(queries), expected, rtol=1e-6)


def test_gmm_finds_two_clusters_and_scores_the_gap_between_them_high():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-5, 0.5, (100, 2)), rng.normal(5, 0.5, (100, 2))])
    gmm = fit_gmm(GmmConfig(n_components=2), x)
    assert sorted(np.round(gmm.means[:, 0]).tolist()) == [-5.0, 5.0]
    on_cluster, between = gmm.score(np.array([[5.0, 5.0], [0.0, 0.0]]))
    assert between > on_cluster + 10


def test_variants_share_one_path_and_weighted_spans_sections_to_attributes():
    rng = np.random.default_rng(4)
    sec, att = rng.standard_normal((40, 8)), rng.standard_normal((40, 4))
    q_sec, q_att = rng.standard_normal((6, 8)), rng.standard_normal((6, 4))
    sections, domains = np.zeros(40, int), ["source"] * 40

    def scores(variant, weight=0.5):
        ref_parts, weights = variant_parts(sec, att, variant, weight)
        query_parts, _ = variant_parts(q_sec, q_att, variant, weight)
        scorer = SectionScorer(ScorerConfig(), weights).fit(ref_parts, sections, domains)
        return scorer.score(query_parts, np.zeros(6, int))

    np.testing.assert_allclose(scores("weighted", 1.0), scores("sections"))
    np.testing.assert_allclose(scores("weighted", 0.0), scores("attributes"))
    # Concatenated unit vectors: cosine distance = mean of the two subspace distances to the
    # same reference, so with one reference concat equals weighted at w = 0.5.
    one_ref = SectionScorer(ScorerConfig(), [1.0]).fit(
        variant_parts(sec[:1], att[:1], "concat")[0], np.zeros(1, int), ["source"])
    weighted = SectionScorer(ScorerConfig(), [0.5, 0.5]).fit(
        variant_parts(sec[:1], att[:1], "weighted")[0], np.zeros(1, int), ["source"])
    np.testing.assert_allclose(
        one_ref.score(variant_parts(q_sec, q_att, "concat")[0], np.zeros(6, int)),
        weighted.score(variant_parts(q_sec, q_att, "weighted")[0], np.zeros(6, int)))
    with pytest.raises(BadInput, match="variant"):
        variant_parts(sec, att, "both")


def test_pooling_mean_std_and_a_clip_with_no_patches():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(pool(x, "mean"), [2.0, 4.0])
    np.testing.assert_allclose(pool(x, "std"), [1.0, 2.0])
    assert pool(x, "meanstd").shape == (4,)
    with pytest.raises(BadInput, match="shorter than one patch"):
        pool(np.zeros((0, 2)))


def test_source_centres_keep_every_target_reference():
    rng = np.random.default_rng(5)
    source, target = clustered(rng, 200, 8, n_clusters=3), rng.standard_normal((3, 8)) + 4
    parts = [np.concatenate([source, target])]
    domains = ["source"] * 200 + ["target"] * 3
    config = ScorerConfig(backend=KnnConfig(metric="euclidean"), source_centres=5)
    scorer = SectionScorer(config, [1.0]).fit(parts, np.zeros(203, int), domains)
    assert scorer.sections[0].backends[0].references.shape == (8, 8)
    np.testing.assert_allclose(scorer.score([target], np.zeros(3, int)), 0.0, atol=1e-5)


def test_a_section_without_references_is_refused_with_the_fix():
    scorer = SectionScorer(ScorerConfig(), [1.0]).fit([np.ones((3, 2))], np.zeros(3, int),
                                                      ["source"] * 3)
    with pytest.raises(BadInput, match="section 04 has no normal references"):
        scorer.score([np.ones((1, 2))], np.array([4]))


def test_cross_fitted_reference_scores_are_not_self_matches():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 4))
    config = ScorerConfig(backend=KnnConfig(metric="euclidean"))
    scores = cross_fit_scores(config, [1.0], [x], np.zeros(30, int), ["source"] * 30)
    assert np.all(scores > 0.1)  # a reference against itself would score 0


def test_enrolled_audio_is_held_out_in_stretches_of_time_not_clip_by_clip():
    # 12 training clips dealt at random, 20 consecutive enrolled clips in 5 stretches: each
    # enrolled part is scored against audio recorded minutes away, not its own neighbours
    sections = np.zeros(32, int)
    in_order = np.r_[np.zeros(12, bool), np.ones(20, bool)]
    folds = section_folds(sections, 5, 0, in_time_order=in_order)
    assert folds[12:].tolist() == [f for f in range(5) for _ in range(4)]
    assert sorted(set(folds[:12].tolist())) == list(range(5))
    assert np.any(np.diff(folds[:12]) < 0)  # the training clips still at random


def test_a_folders_few_target_files_are_spread_over_the_folds_not_held_out_together():
    # a DCASE train folder in name order: 16 source files then 4 target files; cut into
    # contiguous folds as one recording, the 4 target files would form the last fold alone and
    # be scored against no file of their condition (session 6: a threshold 4x too high)
    sections = np.zeros(20, int)
    domains = np.array(["source"] * 16 + ["target"] * 4)
    folds = section_folds(sections, 5, 0, in_time_order=np.ones(20, bool), groups=domains)
    assert folds[16:].tolist() == [0, 1, 2, 3]
    assert np.all(np.diff(folds[:16]) >= 0)  # the source files still in stretches of time
    assert set(folds[:16].tolist()) == set(range(5))


def test_gamma_threshold_sits_at_the_90th_percentile_of_normal_scores():
    samples = stats.gamma(a=3.0, scale=2.0).rvs(size=2000, random_state=0)
    threshold = calibrate_threshold(samples, ThresholdConfig())
    assert threshold == pytest.approx(stats.gamma(a=3.0, scale=2.0).ppf(0.9), rel=0.05)
    fresh = stats.gamma(a=3.0, scale=2.0).rvs(size=4000, random_state=1)
    assert np.mean(fresh > threshold) == pytest.approx(0.1, abs=0.02)
    quantile = calibrate_threshold(samples, ThresholdConfig(method="quantile", quantile=0.99))
    assert np.mean(samples > quantile) == pytest.approx(0.01, abs=0.002)


def test_section_thresholds_are_json_ready_per_section():
    rng = np.random.default_rng(7)
    table = section_thresholds({0: rng.gamma(2.0, size=200), 3: 10 + rng.gamma(2.0, size=200)},
                               ThresholdConfig())
    assert list(table) == ["00", "03"] and table["00"]["method"] == "gamma"
    assert table["03"]["threshold"] > table["00"]["threshold"] + 5
    assert json.loads(json.dumps(table)) == table
