"""Alarm thresholds for a false-alarm budget, and the event-level evaluation of streams."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge.alarms.budget import block_maxima, budget_threshold, trip_statistic
from edge.alarms.rule import AlarmRule, AlarmRuleConfig, StreamKey
from edge.bundle.calibrate import AlarmBudget
from edge.bundle.enroll import enroll
from edge.bundle.load import load_bundle
from edge.cli import main
from edge.scoring.backends import KnnBackend, KnnConfig
from edge.synth import attribute_values, render_clip, synthesize_stream

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_trip_statistic_says_when_the_alarm_rule_trips() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    config = AlarmRuleConfig(trip_hops=3, window_hops=5)
    statistic = trip_statistic(scores, 3, 5)
    for threshold in (0.0, 0.5, 1.0, 5.0):
        rule = AlarmRule(StreamKey("n", "m", "00"), threshold,
                         config.model_copy(update={"clear_threshold": -1e9}))
        raises = [h for h, s in enumerate(scores)
                  if rule.update(h * 0.5, float(s), NOW) is not None]
        over = np.flatnonzero(statistic > threshold)
        assert raises[:1] == over[:1].tolist()  # the first raise, or none at all


def test_fewer_references_give_a_more_cautious_threshold() -> None:
    higher = 0
    for seed in range(20):  # the same sound, 10 or 1,000 blocks of it
        rng = np.random.default_rng(seed)
        few = budget_threshold(rng.gamma(4.0, size=10), 10.0, 1 / 30)
        many = budget_threshold(rng.gamma(4.0, size=1000), 10.0, 1 / 30)
        higher += few.threshold > many.threshold
        assert few.tail_scale_upper / few.tail_scale > many.tail_scale_upper / many.tail_scale
    assert higher >= 16


def test_the_threshold_is_never_below_what_normal_audio_reached() -> None:
    # one huge normal block among many quiet ones: the tail fit alone would sit below it
    maxima = np.r_[1 + 0.01 * np.random.default_rng(4).random(300), 50.0]
    fitted = budget_threshold(maxima, 10.0, 1 / 30)
    assert fitted.threshold > 50.0 and fitted.bound == "highest seen"


def test_the_promise_holds_on_held_out_normal_blocks() -> None:
    """Calibrated on 100 blocks, a rate of 1 per 100 blocks' time is promised; on 200,000
    fresh blocks of the same sound the measured rate stays within it."""
    rng = np.random.default_rng(2)
    days_per_block = 10.0 / 86400
    promise = 1.0 / (100 * days_per_block) / 100  # one per 10,000 blocks, in per day
    fitted = budget_threshold(rng.gamma(4.0, size=100), 10.0, promise)
    held_out = rng.gamma(4.0, size=200_000)
    measured = np.sum(held_out > fitted.threshold) / (held_out.size * days_per_block)
    assert measured <= promise


def test_a_window_between_two_states_is_near_their_mix() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=64), rng.normal(size=64)
    references = np.stack([a, b, *rng.normal(size=(6, 64))])
    straddling = 0.4 * a + 0.6 * b
    plain = KnnBackend(KnnConfig(metric="euclidean", mixtures=0), references)
    mixed = KnnBackend(KnnConfig(metric="euclidean", mixtures=8), references)
    assert mixed.score(straddling[None])[0] < 0.1 * plain.score(straddling[None])[0]
    fault = a + 3.0 * rng.normal(size=64)
    assert mixed.score(fault[None])[0] > 0.8 * plain.score(fault[None])[0]


def _clips(n: int, seed: int) -> list[np.ndarray]:
    values = attribute_values("fan", "source")
    condition = [(key, options[0]) for key, options in values.items()]
    return [render_clip("fan", 0, condition, 160_000, [seed, i]) for i in range(n)]


def test_enrollment_with_a_budget_states_its_promise(tmp_path: Path, capsys) -> None:
    few = enroll(tmp_path / "few", "fan", 0, _clips(12, 0), "test", "source",
                 budget=AlarmBudget())[0]
    many = enroll(tmp_path / "many", "fan", 0, _clips(60, 0), "test", "source",
                  budget=AlarmBudget())[0]
    t_few = load_bundle(few).system.thresholds[0]
    t_many = load_bundle(many).system.thresholds[0]
    assert t_few.calibration["method"] == "false-alarm budget"
    assert t_few.calibration["budget"]["audio_minutes"] < t_many.calibration["budget"][
        "audio_minutes"]
    assert t_few.calibration["decision"]["threshold"] < t_few.threshold
    assert main(["bundle", "verify", str(many)]) == 0
    out = capsys.readouterr().out
    assert "false alarms per day per stream" in out and "min of normal audio" in out


def test_streams_are_evaluated_by_event(tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    enroll(models, "fan", 0, _clips(12, 0), "test", "source")
    streams = tmp_path / "streams"
    meta = synthesize_stream(streams / "fan_fault.wav", "fan", section=0, seconds=90,
                             fault_start=50, fault_seconds=25, severity=2.0)
    assert meta["faults"] or meta["fault"]
    out = tmp_path / "report"
    assert main(["evaluate", "--streams", str(streams), "--models", str(models),
                 "--out", str(out), "--no-plots"]) == 0
    report = json.loads((out / "results.json").read_text())
    total = report["summary"]["total"]
    assert total["recordings"] == 1 and total["faults"] == 1
    recording = report["recordings"][0]
    assert recording["hops"] > 100
    assert 0 < recording["normal_hours"] < 90 / 3600
    if recording["faults"][0]["detected"]:
        assert 0 <= recording["faults"][0]["delay_s"] < 35
    assert "false alarms" in (out / "results.md").read_text()
    assert "recordings" in capsys.readouterr().out


def test_a_recording_without_labels_is_refused(tmp_path: Path, capsys) -> None:
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "x.wav").write_bytes(b"RIFF")
    assert main(["evaluate-streams", "--streams", str(streams), "--models", str(tmp_path),
                 "--out", str(tmp_path / "r")]) == 2
    assert "x.json" in capsys.readouterr().err


def test_block_maxima_skip_hops_of_other_domains() -> None:
    values = np.r_[np.full(20, -np.inf), np.arange(20.0)]
    assert block_maxima(values, 20).tolist() == [19.0]


def test_a_stream_asking_for_another_budget_or_rule_gets_thresholds_for_it(tmp_path: Path,
                                                                           caplog) -> None:
    from edge.config import StreamConfig
    from edge.daemon import alarm_rule_for

    models = enroll(tmp_path / "models", "fan", 0, _clips(30, 0), "test", "source",
                    budget=AlarmBudget())[0].parent
    bundle = load_bundle(models, "fan")
    key = StreamKey("n", "fan", "00")

    def rule(**stream) -> AlarmRule:
        config = StreamConfig.model_validate({"machine": "fan", "domain": "pooled",
                                              "source": {"type": "file", "path": "x.wav"},
                                              **stream})
        return alarm_rule_for(config, key, bundle)

    own = rule().threshold
    assert own == bundle.system.thresholds[0].threshold
    assert rule(alarm={"false_alarms_per_day": 100}).threshold < own  # a looser budget
    assert rule(alarm={"false_alarms_per_day": 1e-4}).threshold > own  # a stricter one
    assert rule(alarm={"trip_hops": 10, "window_hops": 20}).threshold != own
    assert rule(window_seconds=5.0, alarm={"false_alarms_per_day": 100}).threshold == own
    assert "promise does not apply" in caplog.text


def test_the_gamma_threshold_is_never_below_the_empirical_quantile() -> None:
    from edge.scoring.thresholds import ThresholdConfig, calibrate_threshold

    # 40 widely spread normal scores (median 7.5, 0.9 quantile 21.5, max 129), like real clips
    # of one unit: the free-location gamma fit puts its "0.9 quantile" at 1.9
    spread = np.random.default_rng(3).lognormal(2.2, 0.8, size=40)
    threshold = calibrate_threshold(spread, ThresholdConfig(method="gamma", quantile=0.9))
    assert threshold >= np.quantile(spread, 0.9) > 3 * np.median(spread) / 2


def test_enough_enrolled_audio_sets_the_unit_threshold_without_the_data_set_tail() -> None:
    """A data set's spliced clips of many conditions reach scores one unit never does; with
    ten minutes of the unit's own sound its threshold is set by that sound alone (and says
    so), with less it stays on every reference."""
    from edge.bundle.calibrate import CalibrationTraces, budget_thresholds
    from edge.bundle.enroll import no_training_system

    system = no_training_system("stats")[0]
    rng = np.random.default_rng(0)
    per_stretch = 270  # hops of 0.5 s: a stretch of about 2.3 minutes

    def traces(stretches: int) -> CalibrationTraces:
        data_set = np.abs(rng.standard_t(2, 2400)) * 5.0  # heavy tail, spliced conditions
        own = [rng.normal(0.0, 1.0, per_stretch) for _ in range(stretches)]
        scores = np.concatenate([data_set, *own])
        streams = np.concatenate([np.zeros(2400, int)]
                                 + [np.full(per_stretch, 1 + i) for i in range(stretches)])
        on_site = np.arange(scores.size) >= 2400
        return CalibrationTraces({"stats": scores}, np.zeros(scores.size, int),
                                 np.full(scores.size, "target"), streams, 0, on_site)

    budget, rule = AlarmBudget(), AlarmRuleConfig()
    enough = budget_thresholds(system, traces(5), rule, budget)[0]
    few = budget_thresholds(system, traces(2), rule, budget)[0]
    assert enough.calibration["on"] == "enrolled audio"
    assert few.calibration["on"] == "all references"
    assert enough.calibration["budget"]["audio_minutes"] < 12
    assert enough.threshold < few.threshold / 2
    assert enough.calibration["budget"]["highest_seen"] < 6 < few.calibration["budget"][
        "highest_seen"]


def test_the_cross_check_says_when_the_unheard_sound_was_heard_and_for_how_long() -> None:
    """Enrolled audio in five stretches; the third holds one minute of a sound the others never
    do (another machine running): the cross-check flags that stretch alone, places the peak in
    that minute on the enrollment's clock, and the advice tells the operator when it was."""
    from edge.bundle.calibrate import CalibrationTraces, cross_check
    from edge.bundle.enroll import Enrolled, enrollment_advice, no_training_system

    system = no_training_system("stats")[0]
    rng = np.random.default_rng(1)
    per_stretch, hop = 270, 0.5                       # hops of 0.5 s: 2.4 min per stretch
    own = [rng.normal(0.0, 1.0, per_stretch) for _ in range(5)]
    own[2][100:220] += 30.0                           # hops 100-219 of the third: one minute
    scores = np.concatenate(own)
    streams = np.repeat(np.arange(5), per_stretch)
    traces = CalibrationTraces({"stats": scores}, np.zeros(scores.size, int),
                               np.full(scores.size, "target"), streams, 0,
                               np.ones(scores.size, bool))
    budget, rule = AlarmBudget(), AlarmRuleConfig()
    checks = cross_check(system, traces, range(5), rule, budget)
    assert [c.alarms > 0 for c in checks] == [False, False, True, False, False]
    flagged = checks[2]
    stretch_min = ((per_stretch - 1) * hop + budget.window_seconds) / 60.0
    assert flagged.start_min == pytest.approx(2 * stretch_min)
    event = (flagged.start_min + (100 * hop) / 60.0, flagged.start_min + (220 * hop) / 60.0)
    assert event[0] <= flagged.peak_min <= event[1] + budget.window_seconds / 60.0
    assert 0.8 <= flagged.over_min <= 1.2              # about the minute it lasted
    advice = enrollment_advice(Enrolled(Path("x"), 5, checks, None), 5 * stretch_min * 60)
    text = "\n".join(advice)
    assert "NOT STABLE: 1 of 5" in text
    assert f"around minute {flagged.peak_min:.1f}" in text


def test_enrollment_advice_asks_for_up_to_an_hour() -> None:
    """Under 10 minutes: "ENOUGH?"; from there to an hour (with a promise): "more", since
    more recurring audio lowers the threshold; an hour or more: neither."""
    from edge.bundle.enroll import Enrolled, enrollment_advice

    promise = {"false_alarms_per_day": 1 / 30, "confidence": 0.9, "expected_per_day": 0.002,
               "audio_minutes": 29.2, "on": "enrolled audio"}

    def advice(minutes: float, with_promise: bool = True) -> str:
        enrolled = Enrolled(Path("x"), 1, [], promise if with_promise else None)
        return "\n".join(enrollment_advice(enrolled, minutes * 60.0))

    assert "ENOUGH? 5.0 min" in advice(5) and "more:" not in advice(5)
    assert "more: 30 min enrolled; up to 60 min" in advice(30)
    assert "ENOUGH?" not in advice(30)
    assert "more:" not in advice(30, with_promise=False)  # clip quantiles: nothing to lower
    assert "more:" not in advice(60) and "ENOUGH?" not in advice(60)
