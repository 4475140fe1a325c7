"""The quiet level: an alarm on a unit whose background moved says so (docs/ALARMS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import SAMPLE_RATE
from edge.bundle.enroll import cut_clips, enroll, enrollment_advice
from edge.bundle.load import load_bundle, load_profiles
from edge.explain import QUIET_MARGIN_DB, explain_window, level_context
from edge.features import LOG_MEL_FRONT_END, quiet_level_db, spectrogram


def clicks_over_background(seconds: float, background: float, seed: int) -> np.ndarray:
    """A valve-like unit: a 20 ms click about once a second over a steady plant background of
    RMS ``background``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    audio = rng.standard_normal(n) * background
    click = np.hanning(int(0.02 * SAMPLE_RATE)) * np.sin(
        2 * np.pi * 2500 * np.arange(int(0.02 * SAMPLE_RATE)) / SAMPLE_RATE)
    for start in np.arange(0.3, seconds - 0.1, 1.0) + rng.uniform(-0.2, 0.2):
        i = int(start * SAMPLE_RATE)
        audio[i:i + click.size] += 0.3 * click
    return audio.astype(np.float32)


def test_the_quiet_level_is_the_background_between_events_not_the_events() -> None:
    quiet = clicks_over_background(10.0, 0.01, 0)
    louder = clicks_over_background(10.0, 0.02, 0)  # the same clicks, background +6 dB
    only_background = np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE) * 0.01
    level = quiet_level_db(spectrogram(quiet, LOG_MEL_FRONT_END))
    assert level == pytest.approx(
        quiet_level_db(spectrogram(only_background, LOG_MEL_FRONT_END)), abs=0.5)
    assert quiet_level_db(spectrogram(louder, LOG_MEL_FRONT_END)) - level == pytest.approx(
        6.0, abs=0.5)


def test_level_context_notes_a_window_outside_the_normal_range_only() -> None:
    normal = np.array([-40.0, -39.5, -38.0])
    inside = level_context(-39.0, normal)
    assert inside["outside_db"] == 0.0 and "note" not in inside
    edge = level_context(-38.0 + QUIET_MARGIN_DB * 0.5, normal)
    assert "note" not in edge
    quieter = level_context(-43.0, normal)
    assert quieter["outside_db"] == pytest.approx(-3.0)
    assert "3.0 dB quieter" in quieter["note"] and "-40.0 to -38.0 dB" in quieter["note"]
    assert "louder" in level_context(-30.0, normal)["note"]


def test_an_alarm_window_with_a_quieter_plant_says_the_level_changed(tmp_path: Path) -> None:
    """Enrolled: a minute of clicks over the plant's background. A window with the plant 6 dB
    quieter is explained with a note naming how much quieter; one like the enrolled audio
    has none. Enrollment reports the range it heard."""
    enrolled_audio = clicks_over_background(60.0, 0.01, 1)
    enrolled = enroll(tmp_path / "models", "valve", 0, cut_clips(enrolled_audio, SAMPLE_RATE),
                      "plant.wav", clip_quantile=True, system_name="stats")
    assert enrolled.quiet_db is not None
    low, high = enrolled.quiet_db
    assert high - low < 1.0  # one steady background
    advice = "\n".join(enrollment_advice(enrolled, 60.0))
    assert f"between {low:.1f} and {high:.1f} dB" in advice

    bundle = load_bundle(tmp_path / "models", "valve")
    system = bundle.system

    def explained(audio: np.ndarray) -> dict:
        window = system.clip_window(audio)
        members = system.score_window(window, 0)[1]
        return explain_window(bundle, window, 0, members)

    same = explained(clicks_over_background(10.0, 0.01, 7))["level"]
    assert "note" not in same and abs(same["outside_db"]) <= QUIET_MARGIN_DB
    quieter = explained(clicks_over_background(10.0, 0.005, 7))["level"]
    assert quieter["outside_db"] == pytest.approx(-6.0, abs=1.0)
    assert "quieter than in any normal clip" in quieter["note"]


def test_a_bundle_written_before_quiet_levels_were_kept_has_none(tmp_path: Path) -> None:
    np.savez(tmp_path / "profiles.npz", spectra=np.zeros((3, 4)), sections=np.array([0, 0, 1]))
    profiles, quiet = load_profiles(tmp_path)
    assert set(profiles) == {0, 1}
    assert all(levels.size == 0 for levels in quiet.values())
