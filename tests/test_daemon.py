"""The daemon end to end: a recording with a known fault -> exactly one alarm episode, over a
real Mosquitto; the same through the virtual ALSA microphone; streamed == offline scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _broker import Broker, Subscriber
from _pipeline import MACHINE, stats_setup
from _virtual_mic import run_cli, virtual_mic_env, write_infile

from edge.audio import read_audio
from edge.bundle.load import load_bundle
from edge.cli import main
from edge.outputs.events import AlarmEvent
from edge.outputs.journal import read_journal
from edge.streaming import window_patches_for

ALARM_TOPIC = f"asd-edge/test/{MACHINE}/00/alarm"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return stats_setup(tmp_path_factory.mktemp("daemon"))


def check_one_episode(events: list[AlarmEvent], fault: dict) -> None:
    """One raise whose window ends inside the fault, one clear after it, the same episode."""
    assert [e.type for e in events] == ["raise", "clear"], [e.type for e in events]
    raised, cleared = events
    assert raised.id == cleared.id and raised.event_id != cleared.event_id
    assert fault["start_s"] < raised.window.end_s <= fault["end_s"], raised.window
    assert cleared.window.start_s >= fault["end_s"] - 1.0, cleared.window
    assert raised.score > raised.threshold
    assert raised.explanation["driver"] == "stats"
    assert raised.explanation["bands"], raised.explanation


def test_file_replay_raises_once_in_the_fault_and_clears_after(setup, tmp_path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, ["asd-edge/#"])
    try:
        subscriber.wait_subscribed()
        state = tmp_path / "state"
        assert main(["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
                     str(setup.models), "--speed", "max", "--mqtt", broker.url, "--node",
                     "test", "--state-dir", str(state), "--no-metrics"]) == 0
        subscriber.wait_for(lambda ms: len([m for m in ms if m.topic == ALARM_TOPIC]) >= 2,
                            what="the raise and the clear")
        events = [AlarmEvent.from_json(m.payload) for m in subscriber.on(ALARM_TOPIC)]
        check_one_episode(events, setup.fault)
        status = subscriber.on("asd-edge/test/status")
        assert status[-1].payload == b"offline"  # the clean shutdown said so
        states = [m.json()["state"] for m in
                  subscriber.on(f"asd-edge/test/{MACHINE}/00/state")]
        assert states == ["ok", "alarm", "ok"]
        # the journal holds the same events; the evidence clip holds the pre-roll
        assert [e.event_id for e in read_journal(state / "journal.jsonl")] == \
            [e.event_id for e in events]
        clip = Path(events[0].clip)
        info = sf.info(str(clip))
        assert info.samplerate == 16000 and info.duration >= 10.0
        # anchored to the raising window: its 10 s, then 5 s after, however far the replay
        # at full speed had read ahead when the score was computed
        end = round(events[0].window.end_s * 16000)
        assert np.allclose(read_audio(clip), read_audio(setup.stream)[end - 160000:end + 80000],
                           atol=1e-4)
    finally:
        subscriber.close()
        broker.kill()


@pytest.mark.slow  # the daemon on a virtual microphone, in a subprocess
def test_microphone_path_gives_the_same_episode(setup, tmp_path) -> None:
    """The recording played through the virtual ALSA capture device (sounddevice, PortAudio)."""
    wave = read_audio(setup.stream)
    infile = write_infile(tmp_path / "mic.raw", wave)
    env = virtual_mic_env(tmp_path, infile)
    state = tmp_path / "state"
    # The file device is not paced like a microphone: it delivers a minute in milliseconds,
    # so the queue must hold all of it (a real microphone needs a few blocks). It also returns
    # stale data past the end of its file: stop each stream at the file's length.
    config = tmp_path / "edge.yaml"
    config.write_text(f"""
node: mic
models_dir: {setup.models}
state_dir: {state}
streams:
  - source: {{type: mic, device: filemic, queue_blocks: 2000}}
    machine: {MACHINE}
    section: 0
metrics: {{enabled: false}}
""")
    assert run_cli(["check-config", str(config)], env).returncode == 0
    result = run_cli(["run", "--config", str(config), "--max-seconds",
                      f"{wave.size / 16000:.3f}"], env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    events = read_journal(state / "journal.jsonl")
    assert [e.type for e in events] == ["raise", "clear"]
    assert all(e.window.start_s is None for e in events)  # a microphone has no file offsets


def test_streamed_windows_score_as_the_same_audio_offline(setup) -> None:
    system = load_bundle(setup.models, MACHINE).system
    wave = read_audio(setup.stream)
    stream = system.stream(window_patches_for(10.0, system.front_end, system.patching), 3)
    checked = 0
    for start in range(0, wave.size, 7000):
        stream.push(wave[start:start + 7000])
        for window in stream.accept(None, None):
            streamed = system.score_window(window, 0)[0]
            offline = system.score_clip(wave[window.start_sample:window.end_sample], 0)[0]
            assert streamed == pytest.approx(offline, rel=1e-5, abs=1e-6)
            checked += 1
    assert checked > 10


@pytest.mark.slow  # starts the daemon twice
def test_cuda_is_a_clear_error_and_auto_says_cpu(setup, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--file", str(setup.stream), "--machine",
         MACHINE, "--models", str(setup.models), "--device", "cuda", "--speed", "max",
         "--state-dir", str(tmp_path / "s"), "--no-metrics"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--device cuda" in result.stderr and "onnxruntime-gpu" in result.stderr
    assert "Traceback" not in result.stderr


def test_events_raised_while_the_broker_is_down_arrive_at_the_next_start(setup, tmp_path):
    """Broker down during a whole replay: the events wait in the outbox (the daemon exits 0
    and says so), and the next start of the daemon delivers them first."""
    broker = Broker(tmp_path / "broker")  # configured, not started: nothing listens yet
    state = tmp_path / "state"
    argv = ["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
            str(setup.models), "--speed", "max", "--mqtt", broker.url, "--node", "test",
            "--state-dir", str(state), "--no-metrics"]
    assert main(argv) == 0
    first = read_journal(state / "journal.jsonl")
    assert [e.type for e in first] == ["raise", "clear"]
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC])
    try:
        subscriber.wait_subscribed()
        assert main(argv) == 0  # the second replay raises its own episode too
        received = subscriber.wait_for(lambda ms: len(ms) >= 4, what="both episodes")
        ids = [AlarmEvent.from_json(m.payload).event_id for m in received]
        assert ids[:2] == [e.event_id for e in first]  # the waiting ones went first
    finally:
        subscriber.close()
        broker.kill()


def test_a_file_shorter_than_one_window_says_nothing_was_scored(setup, tmp_path,
                                                                caplog) -> None:
    """Issue 13 item 11: 4 s of audio and a 10 s window scored nothing without a word."""
    short = tmp_path / "short.wav"
    sf.write(short, read_audio(setup.stream)[:4 * 16000], 16000)
    assert main(["run", "--file", str(short), "--machine", MACHINE, "--models",
                 str(setup.models), "--speed", "max", "--state-dir", str(tmp_path / "s"),
                 "--no-metrics"]) == 0
    assert "the audio ended after 4.0 s, shorter than one window (10 s): nothing was " \
           "scored" in caplog.text
