"""Evidence clips: the alarm's audio with its pre-roll, and retention by count, age and size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.audio import SAMPLE_RATE, read_audio, write_audio
from edge.evidence import EvidenceRecorder, RingBuffer, enforce_retention

REPO = Path(__file__).resolve().parents[1]
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
    assert ring.pushed == 19 and ring.span(15, 17).tolist() == [108, 109]
    assert ring.span(0, 15).tolist() == [107]  # older than the buffer: left out


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


DISK_FULL = """
import json, logging, resource, signal, sys
from pathlib import Path
import numpy as np
import soundfile as sf
logging.basicConfig(level=logging.INFO)
from edge.evidence import EvidenceRecorder
# The clip folder "fills up" after 64 kB: writes past it fail with EFBIG, as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))
folder = Path(sys.argv[1])
written = []
recorder = EvidenceRecorder(folder, "gearbox", 0, pre_roll_seconds=10, post_roll_seconds=0,
                            on_written=written.append)
recorder.push(np.random.default_rng(0).standard_normal(160_000).astype(np.float32) * 0.1)
recorder.trigger("episode-1")
print(json.dumps({"files": sorted(p.name for p in folder.iterdir()), "written": written}))
"""


def test_a_clip_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    """Issue 13 item 2: a full disk left a .partial.wav that retention never removed, so the
    disk stayed full. Here the process may write at most 64 kB per file (RLIMIT_FSIZE)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-c", DISK_FULL, str(folder)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"files": [], "written": []}  # before: a 64 kB .partial.wav stayed
    assert "could not write the alarm clip" in result.stderr
    assert "Traceback" not in result.stderr


def test_retention_removes_partial_clips_older_than_a_minute(tmp_path):
    now = time.time()
    stale = tmp_path / ".gearbox_section_00_20261201T000000Z_ep-1.partial.wav"
    fresh = tmp_path / ".gearbox_section_00_20261201T000001Z_ep-2.partial.wav"  # being written
    clip = tmp_path / "gearbox_section_00_20261201T000002Z_ep-3.wav"
    other = tmp_path / ".other.partial.wav"  # not named like a clip: never touched
    for path in (stale, fresh, clip, other):
        path.write_bytes(b"x" * 1000)
    os.utime(stale, (now - 120, now - 120))
    os.utime(other, (now - 120, now - 120))
    removed = enforce_retention(tmp_path, max_clips=10, max_age_days=30, max_megabytes=100,
                                now=now)
    assert removed == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (fresh, clip, other))


def test_a_clip_is_anchored_to_its_window_not_to_what_was_fed_since(tmp_path) -> None:
    """Scoring lags feeding (a replay at full speed): the clip is the pre-roll up to the
    raising window's end and the post-roll after it, part from the buffer, part still to come."""
    recorder = EvidenceRecorder(tmp_path, "fan", 0, pre_roll_seconds=1.0, post_roll_seconds=0.5,
                                lag_seconds=0.5)
    audio = (np.arange(3 * SAMPLE_RATE) % 1000 / 1000.0).astype(np.float32)
    recorder.push(audio[:2 * SAMPLE_RATE])  # 2 s fed; the window that raised ended at 1.8 s
    path = recorder.trigger("lagging", end_sample=int(1.8 * SAMPLE_RATE))
    assert not path.exists()  # 0.2 s of its post-roll is in the buffer, 0.3 s is still to come
    recorder.push(audio[2 * SAMPLE_RATE:])
    clip, _ = sf.read(path, dtype="float32")
    expected = audio[int(0.8 * SAMPLE_RATE):int(2.3 * SAMPLE_RATE)]
    assert clip.shape == expected.shape and np.allclose(clip, expected, atol=1e-4)
