"""The alarm rule: one raise and one clear per episode, nothing for short spikes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from edge.alarms import AlarmRule, AlarmRuleConfig, StreamKey, Transition
from edge.errors import BadInput

HOP_S = 0.5
START = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
STREAM = StreamKey(node="box-1", machine="gearbox", section="00")
THRESHOLD = 0.5


def run(rule: AlarmRule, scores: np.ndarray) -> list[Transition]:
    """Feed one score per hop (hop i ends at (i + 1) * HOP_S s); return the transitions."""
    transitions = []
    for index, score in enumerate(scores):
        stream_s = (index + 1) * HOP_S
        transition = rule.update(stream_s, float(score), START + timedelta(seconds=stream_s))
        if transition is not None:
            transitions.append(transition)
    return transitions


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Normal-operation scores: well under the threshold, with some jitter."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.25, 0.05, int(seconds / HOP_S)).clip(0.0, 0.4)


def test_one_raise_and_one_clear_for_a_fault_and_nothing_for_spikes() -> None:
    scores = noise(120.0)
    scores[40] = 0.9                      # a one-hop spike at 20 s
    scores[80:82] = 0.9                   # a two-hop spike at 40 s (k - 1 = 2 hops)
    fault = slice(120, 160)               # the fault: 60 s to 80 s
    scores[fault] = 0.8
    scores[130] = 0.45                    # one hop inside the fault dips under the threshold

    transitions = run(AlarmRule(STREAM, THRESHOLD), scores)

    assert [t.type for t in transitions] == ["raise", "clear"]
    raise_, clear = transitions
    assert raise_.episode_id == clear.episode_id
    # k = 3 hops over: the third over-threshold hop of the fault ends at 61.5 s.
    assert raise_.stream_s == pytest.approx(61.5)
    assert raise_.episode_start_s == pytest.approx(60.5)
    # First hop under the clear threshold ends at 80.5 s; hold 5 s: cleared at 85.5 s.
    assert clear.stream_s == pytest.approx(85.5)
    assert raise_.threshold == THRESHOLD and clear.clear_threshold == pytest.approx(0.45)


def test_spikes_shorter_than_k_hops_never_trip() -> None:
    scores = noise(60.0, seed=1)
    for start in range(0, len(scores) - 10, 10):  # 2 hops over, then 8 under, again and again
        scores[start:start + 2] = 0.95
    assert run(AlarmRule(STREAM, THRESHOLD), scores) == []


def test_k_of_n_trips_without_consecutive_hops() -> None:
    # over, under, over, under, over: 3 of the last 5 hops over the threshold.
    scores = np.array([0.9, 0.1, 0.9, 0.1, 0.9])
    transitions = run(AlarmRule(STREAM, THRESHOLD), scores)
    assert [t.type for t in transitions] == ["raise"]
    assert transitions[0].stream_s == pytest.approx(2.5)
    # Spread wider than n = 5 hops, three overs never trip.
    sparse = np.array([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9])
    assert run(AlarmRule(STREAM, THRESHOLD), sparse) == []


def test_hysteresis_and_hold_keep_an_intermittent_fault_one_episode() -> None:
    rule = AlarmRule(STREAM, THRESHOLD)
    scores = np.concatenate([
        np.full(5, 0.9),    # raise
        np.full(20, 0.47),  # under the threshold but above the clear threshold 0.45: still on
        np.full(6, 0.2),    # 3 s under the clear threshold: shorter than the 5 s hold
        np.full(4, 0.9),    # the fault knocks again: same episode
        np.full(11, 0.2),   # 5 s under: clear
        np.full(3, 0.9),    # a new episode
    ])
    transitions = run(rule, scores)
    assert [t.type for t in transitions] == ["raise", "clear", "raise"]
    assert transitions[0].episode_id == transitions[1].episode_id
    assert transitions[2].episode_id != transitions[0].episode_id
    assert rule.active and rule.episode_id == transitions[2].episode_id


def test_episode_ids_are_stable_and_distinct_per_stream() -> None:
    scores = np.concatenate([np.full(3, 0.9), np.full(12, 0.1)])
    first = run(AlarmRule(STREAM, THRESHOLD), scores)
    again = run(AlarmRule(STREAM, THRESHOLD), scores)
    other = run(AlarmRule(StreamKey("box-1", "gearbox", "01"), THRESHOLD), scores)
    assert [t.episode_id for t in first] == [t.episode_id for t in again]
    assert first[0].episode_id != other[0].episode_id


def test_configurable_per_stream() -> None:
    config = AlarmRuleConfig(trip_hops=1, window_hops=1, clear_threshold=0.3, hold_seconds=0.0)
    transitions = run(AlarmRule(STREAM, THRESHOLD, config), np.array([0.6, 0.4, 0.2]))
    assert [(t.type, t.stream_s) for t in transitions] == [("raise", 0.5), ("clear", 1.5)]


def test_clear_levels_not_set_fall_back_to_0_9_of_the_threshold() -> None:
    """clear_threshold wins, else clear_fraction x threshold; with neither set (None, the
    default: "not set", which the daemon fills with the bundle's calibrated clear level) the
    rule's own fallback is 0.9 x threshold."""
    assert AlarmRuleConfig().clear_fraction is None
    assert AlarmRuleConfig(clear_fraction=None) == AlarmRuleConfig()
    assert AlarmRule(STREAM, THRESHOLD).clear_threshold == pytest.approx(0.45)
    rule = AlarmRule(STREAM, THRESHOLD, AlarmRuleConfig(clear_fraction=0.8))
    assert rule.clear_threshold == pytest.approx(0.4)
    rule = AlarmRule(STREAM, THRESHOLD, AlarmRuleConfig(clear_fraction=0.8, clear_threshold=0.3))
    assert rule.clear_threshold == 0.3


def test_non_finite_scores_leave_the_state_alone() -> None:
    rule = AlarmRule(STREAM, THRESHOLD)
    scores = np.array([0.9, 0.9, np.nan, np.inf, 0.9])
    assert [t.type for t in run(rule, scores)] == ["raise"]


def test_bad_configs_are_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="extra"):
        AlarmRuleConfig.model_validate({"trip_hop": 3})
    with pytest.raises(ValidationError, match="trip_hops=6 is more than window_hops=5"):
        AlarmRuleConfig(trip_hops=6, window_hops=5)
    with pytest.raises(BadInput, match="set clear_threshold"):
        AlarmRule(STREAM, -1.0)
    with pytest.raises(BadInput, match="above the threshold"):
        AlarmRule(STREAM, THRESHOLD, AlarmRuleConfig(clear_threshold=0.7))
    # A negative (standardised) threshold works with an explicit clear threshold.
    rule = AlarmRule(STREAM, -1.0, AlarmRuleConfig(clear_threshold=-1.5))
    assert rule.clear_threshold == -1.5
