"""Issue 13 item 5: a dead microphone is "no signal", never a machine fault.

Silence, NaN audio and stuck samples streamed through the daemon (real WAV files through the
file source, a real Mosquitto): no alarm event, ``no_signal`` with its reason on the stream's
retained ``signal`` topic, ``ok`` again when the sound returns, a bounded number of log lines,
and the metrics and the web page's state say so.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _broker import Broker, Subscriber
from _pipeline import MACHINE, stats_setup
from _virtual_mic import DEVICE, REPO, PacedWriter, virtual_mic_env

from edge.audio import SAMPLE_RATE, read_audio, resample
from edge.cli import main
from edge.health import Health
from edge.outputs.journal import read_journal, read_signals
from edge.signal import SignalCheck, audio_problem, repeat_period
from edge.web.state import WebState

TOPIC = f"asd-edge/test/{MACHINE}/00"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return stats_setup(tmp_path_factory.mktemp("signal"))


def healthy(setup, seconds: float, start_s: float = 0.0) -> np.ndarray:
    """Normal sound of the unit (the recording's fault lies at 25-40 s)."""
    wave = read_audio(setup.stream)
    return wave[int(start_s * SAMPLE_RATE):int((start_s + seconds) * SAMPLE_RATE)]


def seconds_of(value: float, seconds: float) -> np.ndarray:
    return np.full(int(seconds * SAMPLE_RATE), value, np.float32)


def test_audio_problem_names_what_is_wrong() -> None:
    rng = np.random.default_rng(0)
    sound = (0.05 * rng.standard_normal(1600)).astype(np.float32)
    assert audio_problem(sound) is None
    assert audio_problem((1e-3 * rng.standard_normal(1600)).astype(np.float32)) is None  # -60 dB
    assert audio_problem(np.zeros(1600, np.float32)) == "silence"
    assert audio_problem((1e-7 * rng.standard_normal(1600)).astype(np.float32)) == "silence"
    with_nan = sound.copy()
    with_nan[700] = np.nan
    assert audio_problem(with_nan) == "nan"
    with_inf = sound.copy()
    with_inf[3] = -np.inf
    assert audio_problem(with_inf) == "nan"
    assert audio_problem(np.full(1600, 0.3, np.float32)) == "stuck"
    assert audio_problem(np.full(1600, 0.3, np.float32)
                         + (1e-7 * rng.standard_normal(1600)).astype(np.float32)) == "stuck"
    assert audio_problem(np.zeros(0, np.float32)) is None
    # the floor is a setting: -40 dBFS calls quiet sound silence
    assert audio_problem((1e-3 * rng.standard_normal(1600)).astype(np.float32), -40.0) \
        == "silence"


def test_short_bad_audio_is_dropped_without_a_change_and_long_is_no_signal() -> None:
    check = SignalCheck("s", no_signal_seconds=2.0, ok_seconds=1.0)
    block = 1600  # 0.1 s
    rng = np.random.default_rng(1)
    silent = np.zeros(block, np.float32)

    def sound(blocks: int) -> list[np.ndarray]:  # fresh noise: sound never repeats itself
        return list((0.05 * rng.standard_normal((blocks, block))).astype(np.float32))

    t = 1000.0
    verdicts = []
    for samples in sound(5) + [silent] * 10 + sound(5):  # 1 s of silence: no change
        verdicts.append(check.block(samples, t))
        t += 0.1
    assert [good for good, _ in verdicts] == [True] * 5 + [False] * 10 + [True] * 5
    assert all(change is None for _, change in verdicts) and check.ok
    changes = []
    for samples in [silent] * 25 + sound(15):
        changes.append(check.block(samples, t)[1])
        t += 0.1
    happened = [(i, c) for i, c in enumerate(changes) if c is not None]
    assert [(i, c.state, c.reason) for i, c in happened] == [
        (19, "no_signal", "silence"), (34, "ok", None)]
    assert happened[0][1].since == pytest.approx(1002.0)  # the first silent block
    assert happened[1][1].since == pytest.approx(1004.5)  # the first block of sound again


def run_file(setup, wave: np.ndarray, tmp_path: Path, subtype: str = "PCM_16",
             broker: Broker | None = None) -> tuple[list, Subscriber | None]:
    """Replay ``wave`` through the daemon at --speed max; return the journal's events and
    the subscriber (messages under the stream's topics)."""
    path = tmp_path / "input.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype=subtype)
    state = tmp_path / "state"
    argv = ["run", "--file", str(path), "--machine", MACHINE, "--models", str(setup.models),
            "--speed", "max", "--node", "test", "--state-dir", str(state), "--no-metrics"]
    subscriber = None
    if broker is not None:
        subscriber = Subscriber(broker.port, [f"{TOPIC}/#"])
        subscriber.wait_subscribed()
        argv += ["--mqtt", broker.url]
    assert main(argv) == 0
    return read_journal(state / "journal.jsonl"), subscriber


def signals(subscriber: Subscriber) -> list[tuple[str, str | None]]:
    return [(m.json()["state"], m.json()["reason"]) for m in subscriber.on(f"{TOPIC}/signal")]


@pytest.mark.parametrize("problem", ["silence", "stuck"])
def test_dead_microphone_raises_no_alarm_and_says_no_signal(setup, tmp_path,
                                                            problem: str) -> None:
    """20 s of sound, 20 s of digital silence (or of one stuck value), 20 s of sound: before,
    the silence scored 426 against a threshold of 1.16 and raised an alarm."""
    dead = seconds_of(0.0 if problem == "silence" else 0.25, 20.0)
    wave = np.concatenate([healthy(setup, 20.0), dead, healthy(setup, 20.0, 40.0)])
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        events, subscriber = run_file(setup, wave, tmp_path, broker=broker)
        assert subscriber is not None
        subscriber.wait_for(lambda ms: len([m for m in ms if m.topic == f"{TOPIC}/signal"])
                            >= 3, what="ok, no_signal, ok")
        assert events == []  # no alarm
        assert signals(subscriber) == [("ok", None), ("no_signal", problem), ("ok", None)]
        lost, back = (m.json() for m in subscriber.on(f"{TOPIC}/signal")[1:])
        states = [m.json()["state"] for m in subscriber.on(f"{TOPIC}/state")]
        assert set(states) == {"ok"}
        # no_signal is dated at the first dead sample, ok at the first sound after it
        since = [datetime.fromisoformat(x["since"].replace("Z", "+00:00")).timestamp()
                 for x in (lost, back)]
        assert since[1] - since[0] == pytest.approx(20.0, abs=0.2)
        # the journal says when the microphone was dead, as the signal topic did
        journaled = read_signals(tmp_path / "state" / "journal.jsonl")
        assert [(s.state, s.reason, s.since.timestamp()) for s in journaled] == \
            [("no_signal", problem, pytest.approx(since[0], abs=1e-3)),
             ("ok", None, pytest.approx(since[1], abs=1e-3))]
        # scoring resumed on the sound after it, with windows of fresh audio only (a window
        # spans 9.76 s: the first ends at 49.76 s)
        scores = [m.json()["stream_s"] for m in subscriber.on(f"{TOPIC}/score")]
        assert max(scores) >= 49.7, scores
        assert not [s for s in scores if 20.1 < s < 49.7], scores
        subscriber.close()
    finally:
        broker.kill()


def test_nan_audio_raises_no_alarm_and_logs_a_few_lines_not_one_per_hop(setup, tmp_path,
                                                                         caplog) -> None:
    """30 s of NaN audio: before, a warning per hop (~80 here, ~170,000 a day) and no state."""
    wave = np.concatenate([healthy(setup, 20.0), seconds_of(np.nan, 30.0),
                           healthy(setup, 20.0, 40.0)])
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        with caplog.at_level(logging.INFO):
            events, subscriber = run_file(setup, wave, tmp_path, subtype="FLOAT",
                                          broker=broker)
        assert subscriber is not None
        subscriber.wait_for(lambda ms: len([m for m in ms if m.topic == f"{TOPIC}/signal"])
                            >= 3, what="ok, no_signal, ok")
        assert events == []
        assert signals(subscriber) == [("ok", None), ("no_signal", "nan"), ("ok", None)]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                    and r.name.startswith("edge.")]
        assert len(warnings) <= 3, [r.getMessage() for r in warnings]
        assert any("no signal: NaN or infinite samples" in r.getMessage() for r in warnings)
        assert any("signal back after 30.0 s" in r.getMessage() for r in warnings)
        subscriber.close()
    finally:
        broker.kill()


def test_an_open_episode_stays_open_through_no_signal_and_clears_on_fresh_sound(setup,
                                                                                tmp_path):
    """Raised in the fault, the microphone dies in the middle of it: no clear while there is
    no signal (the fault is not known to be gone), and the clear comes from sound after it."""
    wave = np.concatenate([healthy(setup, 32.0), seconds_of(0.0, 20.0),
                           healthy(setup, 20.0, 40.0), healthy(setup, 10.0)])
    events, _ = run_file(setup, wave, tmp_path)
    assert [e.type for e in events] == ["raise", "clear"], [e.type for e in events]
    raised, cleared = events
    assert setup.fault["start_s"] < raised.window.end_s <= 32.0
    assert cleared.window.start_s >= 52.0, cleared.window  # only audio after the silence


def test_metrics_and_web_state_show_no_signal() -> None:
    health = Health("box")
    health.add_stream("mic-1")
    health.set_signal("mic-1", False, "silence")
    text = generate(health)
    assert 'asd_edge_signal_ok{stream="mic-1"} 0.0' in text
    assert 'asd_edge_signal_lost_total{reason="silence",stream="mic-1"} 1.0' in text
    assert "NO SIGNAL (silence)" in health.heartbeat_line()
    page = WebState([("mic-1", "gearbox", "00", 1.0, 0.9)], Path("/nonexistent/actions"))
    row = page.overview(health.snapshot())["streams"][0]
    assert (row["state"], row["label"]) == ("no signal", "no signal (silence)")
    health.set_signal("mic-1", False, "device_lost")
    assert page.overview(health.snapshot())["streams"][0]["state"] == "device lost"
    health.set_signal("mic-1", True, None)
    assert page.overview(health.snapshot())["streams"][0]["state"] == "ok"
    assert 'asd_edge_signal_ok{stream="mic-1"} 1.0' in generate(health)


def generate(health: Health) -> str:
    from prometheus_client import generate_latest

    return generate_latest(health.registry).decode()


def test_a_lost_device_is_no_signal_at_once_and_back_with_its_sound(caplog) -> None:
    check = SignalCheck("mic", no_signal_seconds=2.0, log_interval_s=0.0)
    assert check.device(False) is None  # not opened yet: it gets 2 s to open
    assert check.device(True) is None
    sound = np.random.default_rng(2).standard_normal(1600).astype(np.float32) * 0.05
    assert check.block(sound, 10.0) == (True, None)
    lost = check.device(False)  # it was open: gone now (the capture waited for it already)
    assert lost is not None and (lost.state, lost.reason) == ("no_signal", "device_lost")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # while it lasts: a summary per log interval (0 s here)
            assert check.device(False) is None
    assert len([r for r in caplog.records if "still no signal" in r.getMessage()]) == 3
    assert check.device(True) is None
    good, back = check.block(sound, 20.0)
    assert good and back is not None and back.state == "ok"


# -- frozen: a device replaying its last buffer ------------------------------------------------

def test_repeat_period_finds_audio_the_stream_already_held_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    sound = (0.05 * rng.standard_normal(32000)).astype(np.float32)
    # fresh audio (the same noise process, other samples) never repeats
    assert repeat_period(sound, sound[:1600] + np.float32(0)) == 32000  # an exact copy is found
    assert repeat_period(sound[1600:], (0.05 * rng.standard_normal(1600)).astype(np.float32)) \
        is None
    # a 3,200-sample buffer replayed (the ALSA file device after its writer stopped), cut into
    # blocks that do not align with it: every block is found 3,200 samples back
    buffer = sound[-3200:]
    replayed = np.tile(buffer, 5)
    stream = np.concatenate([sound, replayed])
    for start in range(32000, stream.size - 1500, 1500):
        assert repeat_period(stream[:start][-32000:], stream[start:start + 1500]) == 3200
    # a period shorter than the block repeats within it; a block longer than its history too
    assert repeat_period(buffer[-100:], np.tile(buffer[-100:], 20)) == 100
    # one sample off, a float32 rounding off, or -0.0 for 0.0 is not a repeat
    for changed in (sound[5000:6600].copy() for _ in range(3)):
        changed[800] = np.nextafter(changed[800], np.float32(1))
        assert repeat_period(sound, changed) is None
    assert repeat_period(np.zeros(10, np.float32), -np.zeros(10, np.float32)) is None
    assert repeat_period(np.zeros(0, np.float32), sound[:10]) is None
    assert repeat_period(sound, np.zeros(0, np.float32)) is None
    # the key matching at a place that straddles two samples is not a match
    raw = sound[:64].view(np.uint8)
    shifted = np.frombuffer(raw[1:-3].tobytes(), np.float32)
    assert repeat_period(np.concatenate([[np.float32(0)], shifted]), sound[:32]) is None


def test_replayed_audio_is_frozen_after_the_no_signal_delay_and_ok_when_sound_returns() -> None:
    rng = np.random.default_rng(4)
    check = SignalCheck("mic", no_signal_seconds=2.0, ok_seconds=1.0)
    sound = (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)
    t = 100.0
    for start in range(0, sound.size, 1600):
        assert check.block(sound[start:start + 1600], t) == (True, None)
        t += 0.1
    buffer = sound[-3200:]  # the device replays its last 0.2 s from here on
    verdicts = []
    for _ in range(25):
        verdicts.append(check.block(buffer[:1600], t))
        verdicts.append(check.block(buffer[1600:], t + 0.1))
        t += 0.2
    assert not any(good for good, _ in verdicts)  # never scored
    changes = [(i, c) for i, (_, c) in enumerate(verdicts) if c is not None]
    assert [(i, c.state, c.reason) for i, c in changes] == [(19, "no_signal", "frozen")]
    assert changes[0][1].since == pytest.approx(103.0)  # the first replayed block
    fresh = (0.05 * rng.standard_normal(16000)).astype(np.float32)
    back = [check.block(fresh[s:s + 1600], t + s / 16000) for s in range(0, 16000, 1600)]
    assert [c.state for _, c in back if c is not None] == ["ok"] and all(g for g, _ in back)


@pytest.mark.slow  # the daemon on the virtual microphone, in a subprocess, ~15 s each
@pytest.mark.parametrize("rate, block", [(16000, 1600), (44100, 4096)])
def test_a_microphone_that_stops_delivering_is_no_signal_frozen_within_seconds(
        setup, tmp_path, rate: int, block: int) -> None:
    """The virtual ALSA microphone fed in real time from a pipe whose writer stops after 12 s
    of sound: the device replays its last buffer from then on (neither silence nor stuck
    samples). The stream's retained signal topic says no_signal/frozen within a few seconds of
    the writer stopping, and no alarm is raised from the replayed audio. At 44.1 kHz in blocks
    of 4,096 frames the replayed buffer and the resampler's 441-sample phase cycle meet only
    after minutes: the 16 kHz samples do not repeat, the device's own do."""
    fifo = tmp_path / "mic.fifo"
    env = virtual_mic_env(tmp_path, fifo)
    writer = PacedWriter(fifo, resample(healthy(setup, 12.0), SAMPLE_RATE, rate), rate, block)
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [f"{TOPIC}/#"])
    state = tmp_path / "state"
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({
        "node": "test", "models_dir": str(setup.models), "state_dir": str(state),
        "streams": [{"source": {"type": "mic", "device": DEVICE, "sample_rate": rate,
                                "block_seconds": block / rate},
                     "machine": MACHINE, "section": 0}],
        "mqtt": {"url": broker.url}, "metrics": {"enabled": False}}))
    daemon = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                               str(config)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        subscriber.wait_subscribed()
        stopped_at = writer.wait_stopped(timeout_s=60)
        lost = subscriber.wait_for(
            lambda ms: any(m.topic == f"{TOPIC}/signal" and m.json()["state"] == "no_signal"
                           for m in ms), timeout_s=15, what="no_signal after the writer stopped")
        message = next(m for m in lost if m.topic == f"{TOPIC}/signal"
                       and m.json()["state"] == "no_signal")
        delay = message.received_at - stopped_at
        time.sleep(3.0)  # the device goes on replaying; nothing more may come of it
    finally:
        daemon.terminate()
        log, _ = daemon.communicate(timeout=30)
        subscriber.close()
        broker.kill()
    print(f"{rate} Hz: writer stopped -> no_signal (frozen) at the subscriber: {delay:.3f} s")
    assert daemon.returncode == 0, log[-3000:]
    assert signals(subscriber) == [("ok", None), ("no_signal", "frozen")], log[-3000:]
    assert delay < 3.0, f"no_signal came {delay:.1f} s after the microphone stopped"
    assert subscriber.on(f"{TOPIC}/alarm") == [] and read_journal(state / "journal.jsonl") == []
    assert [(s.state, s.reason) for s in read_signals(state / "journal.jsonl")] == \
        [("no_signal", "frozen")]
    assert "no signal: the audio repeats itself bit-exactly" in log
