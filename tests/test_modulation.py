"""The modulation detector (``edge.scoring.spectral``, system ``modulation``): it hears a train of
impacts locked to the shaft that the log-mel statistics average away, and it does not hear a
change of level or a single knock."""

from __future__ import annotations

import numpy as np
import pytest

from edge.scoring.backends import KnnConfig
from edge.scoring.scorer import SectionScorer
from edge.scoring.spectral import (
    MODULATION_EDGES_HZ,
    SPECTRAL_SYSTEMS,
    spectral_features,
    spectral_scorer_config,
)
from edge.synth import render_clip
from edge.synth.faults import Fault

SECONDS = 10
N = 16000 * SECONDS
CONDITION = (("m-n", "W"),)


def fan(clip: int, fault: Fault | None = None) -> np.ndarray:
    return render_clip("fan", 0, CONDITION, N, (7, clip), fault=fault)


def scores(system: str, references: list[np.ndarray], queries: list[np.ndarray]) -> np.ndarray:
    features = SPECTRAL_SYSTEMS[system]
    scorer = SectionScorer(spectral_scorer_config(KnnConfig(metric="euclidean")), [1.0]).fit(
        [np.stack([spectral_features(w, features) for w in references])],
        np.zeros(len(references), np.int64), ["source"] * len(references))
    found = np.stack([spectral_features(w, features) for w in queries])
    return scorer.score([found], np.zeros(len(queries), np.int64))


@pytest.fixture(scope="module")
def fan_clips() -> dict[str, list[np.ndarray]]:
    normal = [fan(i) for i in range(14)]
    bearing = [fan(100 + i, Fault("bearing", 0.6, np.random.default_rng(i))) for i in range(3)]
    return {"references": normal[:10], "held_out": normal[10:], "bearing": bearing}


def test_a_bearing_defect_scores_above_every_held_out_normal_clip_with_room(fan_clips) -> None:
    held_out, bearing = np.split(scores("modulation", fan_clips["references"],
                                        fan_clips["held_out"] + fan_clips["bearing"]), [4])
    assert bearing.min() > 1.5 * held_out.max(), (held_out, bearing)
    # the log-mel statistics, same references, same clips: the defect hides in their spread
    plain_held_out, plain_bearing = np.split(scores(
        "stats", fan_clips["references"], fan_clips["held_out"] + fan_clips["bearing"]), [4])
    assert bearing.min() / held_out.max() > plain_bearing.min() / plain_held_out.max()


def test_a_louder_machine_or_one_knock_is_not_a_modulation(fan_clips) -> None:
    quiet = fan_clips["held_out"][0]
    knock = quiet.copy()
    knock[48000:48040] += 0.9 * np.hanning(40)  # one impact, 2.5 ms, in one second of ten
    held_out, louder, knocked = np.split(scores(
        "modulation", fan_clips["references"], fan_clips["held_out"] + [quiet * 3.0, knock]),
        [4, 5])
    assert louder[0] == pytest.approx(held_out[0], rel=1e-3)  # a level change cancels
    assert knocked[0] < 1.2 * held_out.max()


def test_features_are_8_bands_by_16_modulation_bands_of_finite_logs() -> None:
    features = spectral_features(fan(0), SPECTRAL_SYSTEMS["modulation"])
    assert features.shape == (8 * (len(MODULATION_EDGES_HZ) - 1),)
    assert np.isfinite(features).all()
    # shorter than one second of envelope: one block, still finite
    short = spectral_features(fan(0)[:8000], SPECTRAL_SYSTEMS["modulation"])
    assert short.shape == features.shape and np.isfinite(short).all()
