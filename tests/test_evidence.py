"""Evidence clips: the alarm's audio with its pre-roll, and retention by count, age and size."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import numpy as np

from edge.audio import SAMPLE_RATE, read_audio, write_audio
from edge.evidence import EvidenceRecorder, RingBuffer, enforce_retention

QUANTUM = 1 / 32768  # a 16-bit WAV holds the audio to this step


def ramp(start_s: float, seconds: float) -> np.ndarray:
    """A slow sawtooth whose value tells the time it was recorded at."""
    t = np.arange(round(start_s * SAMPLE_RATE), round((start_s + seconds) * SAMPLE_RATE))
    return ((t % 40000) / 40000 - 0.5).astype(np.float32)


def test_ring_buffer_keeps_the_latest_samples():
    ring = RingBuffer(5)
    ring.push(np.arange(3))
    assert ring.latest().tolist() == [0, 1, 2]
    ring.push(np.arange(3, 7))
    assert ring.latest().tolist() == [2, 3, 4, 5, 6]
    ring.push(np.arange(100, 112))
    assert ring.latest().tolist() == [107, 108, 109, 110, 111]


def test_alarm_clip_holds_the_pre_roll_and_post_roll(tmp_path):
    recorder = EvidenceRecorder(tmp_path, "gearbox", 2, pre_roll_seconds=1.0,
                                post_roll_seconds=0.5)
    for second in range(3):  # 3 s of audio before the alarm
        assert recorder.push(ramp(second, 1.0)) == []
    when = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    path = recorder.trigger("3f2a-episode", when)
    assert path.name == "gearbox_section_02_20260301T123005Z_3f2a-episode.wav"
    assert not path.exists()  # written when the post-roll is in
    assert recorder.push(ramp(3.0, 0.3)) == []
    assert recorder.push(ramp(3.3, 0.4)) == [path]
    clip = read_audio(path)
    np.testing.assert_allclose(clip, ramp(2.0, 1.5), atol=QUANTUM)  # seconds 2.0 .. 3.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_flush_writes_a_clip_cut_short_by_shutdown(tmp_path):
    recorder = EvidenceRecorder(tmp_path, "fan", 0, pre_roll_seconds=0.5, post_roll_seconds=5.0)
    recorder.push(ramp(0.0, 1.0))
    path = recorder.trigger("e1")
    recorder.push(ramp(1.0, 0.25))
    assert recorder.flush() == [path]
    np.testing.assert_allclose(read_audio(path), ramp(0.5, 0.75), atol=QUANTUM)


def test_retention_removes_the_oldest_beyond_count_age_and_size(tmp_path):
    now = time.time()
    paths = []
    for i in range(6):  # clip i is (6 - i) hours old; each 1 s of 16-bit audio = 32 kB
        path = tmp_path / f"fan_section_00_2026030{i}T000000Z_e{i}.wav"
        write_audio(path, ramp(0, 1.0))
        os.utime(path, (now - (6 - i) * 3600, now - (6 - i) * 3600))
        paths.append(path)
    other = tmp_path / "notes.txt"  # not a clip: never touched
    other.write_text("keep me")

    assert enforce_retention(tmp_path, 4, 30, 1000, now=now) == paths[:2]
    assert enforce_retention(tmp_path, 100, 3.5 / 24, 1000, now=now) == paths[2:3]
    size = paths[3].stat().st_size
    assert enforce_retention(tmp_path, 100, 30, 2.5 * size / 1e6, now=now) == paths[3:4]
    assert sorted(tmp_path.iterdir()) == sorted([*paths[4:], other])


def test_a_new_clip_applies_retention(tmp_path):
    recorder = EvidenceRecorder(tmp_path, "valve", 1, pre_roll_seconds=0.2,
                                post_roll_seconds=0.0, max_clips=2)
    recorder.push(ramp(0.0, 0.5))
    first = recorder.trigger("a", datetime(2026, 1, 1, tzinfo=UTC))
    os.utime(first, (time.time() - 60, time.time() - 60))
    second = recorder.trigger("b", datetime(2026, 1, 2, tzinfo=UTC))
    third = recorder.trigger("c", datetime(2026, 1, 3, tzinfo=UTC))
    assert not first.exists() and second.exists() and third.exists()
