"""Audio sources: a file replayed at max speed or in real time, and a microphone read through
sounddevice from a virtual ALSA capture device (tests/_virtual_mic.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from _virtual_mic import DEVICE, run_cli, run_python, virtual_mic_env, write_infile

from edge.audio import FILTER_HALF_LENGTH, SAMPLE_RATE, read_audio, resample, write_audio
from edge.capture import FileSource, StreamingResampler, find_input_device
from edge.capture.devices import InputDevice
from edge.errors import BadInput


def noise(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * rate)).astype(np.float32)


# -- files ----------------------------------------------------------------------------------

def test_file_at_max_speed_yields_exactly_the_files_samples_with_offsets(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, noise(2.05))
    blocks = list(FileSource(path, speed="max", block_seconds=0.1))
    assert np.array_equal(np.concatenate([b.samples for b in blocks]), read_audio(path))
    assert [b.samples.shape[0] for b in blocks] == [1600] * 20 + [800]
    assert [b.offset_s for b in blocks] == pytest.approx([i * 0.1 for i in range(21)])
    assert all(b.samples.dtype == np.float32 and not b.discontinuity for b in blocks)
    assert blocks[-1].start_time - blocks[0].start_time == pytest.approx(2.0)


def test_file_is_resampled_and_the_chosen_channel_used(tmp_path):
    stereo = np.stack([noise(1.0, 48000, seed=1), noise(1.0, 48000, seed=2)], axis=1)
    path = tmp_path / "stereo48k.wav"
    write_audio(path, stereo, sample_rate=48000)
    blocks = list(FileSource(path, speed="max", channel=1))
    got = np.concatenate([b.samples for b in blocks])
    assert got.shape == (SAMPLE_RATE,)
    assert np.array_equal(got, read_audio(path, channel=1))


def test_a_long_file_at_44k_streams_the_samples_read_audio_gives(tmp_path):
    """The file is decoded a second at a time and resampled as a stream (a 30-minute replay
    no longer sits in memory whole): across the decode pieces the samples are still those of
    the whole-file read, to the last one."""
    path = tmp_path / "long44k.wav"
    write_audio(path, noise(3.3, 44100, seed=4), sample_rate=44100)
    got = np.concatenate([b.samples for b in FileSource(path, speed="max", block_seconds=0.25)])
    offline = read_audio(path)
    assert got.shape == offline.shape
    np.testing.assert_allclose(got, offline, atol=1e-5)


def test_file_at_realtime_is_paced_like_a_microphone(tmp_path):
    path = tmp_path / "one_second.wav"
    write_audio(path, noise(1.0))
    started = time.monotonic()
    blocks = list(FileSource(path, speed="realtime", block_seconds=0.25))
    elapsed = time.monotonic() - started
    assert len(blocks) == 4
    assert 0.9 <= elapsed < 2.0


def test_file_source_stops_when_asked(tmp_path):
    path = tmp_path / "long.wav"
    write_audio(path, noise(30.0))
    source = FileSource(path, speed="realtime", block_seconds=0.1)
    started = time.monotonic()
    for block in source:
        if block.offset_s >= 0.2:
            source.close()
    assert time.monotonic() - started < 1.0


def test_missing_file_is_bad_input_naming_it(tmp_path):
    with pytest.raises(BadInput, match="nothere.wav"):
        FileSource(tmp_path / "nothere.wav")


# -- streaming resampler ---------------------------------------------------------------------

@pytest.mark.parametrize("rate", [44100, 48000, 22050, 32000])
def test_streaming_resampler_matches_offline_resampling(rate):
    signal = noise(1.0, rate, seed=rate)
    resampler = StreamingResampler(rate, SAMPLE_RATE)
    rng = np.random.default_rng(0)
    pieces, start = [], 0
    while start < signal.shape[0]:
        size = int(rng.integers(1, 2000))
        pieces.append(resampler.process(signal[start:start + size]))
        start += size
    streamed = np.concatenate(pieces)
    offline = resample(signal, rate)
    # Only the outputs that need samples past the end (offline: zero padding) are missing:
    # the filter's half length (256 outputs at 16 kHz, 16 ms).
    assert SAMPLE_RATE - FILTER_HALF_LENGTH - 2 <= streamed.shape[0] <= SAMPLE_RATE
    np.testing.assert_allclose(streamed, offline[:streamed.shape[0]], atol=1e-5)


# -- device lookup (what --mic accepts) ------------------------------------------------------

DEVICES = [InputDevice(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", 2, 44100.0, "ALSA"),
           InputDevice(3, "USB Audio Device: - (hw:1,0)", 1, 48000.0, "ALSA"),
           InputDevice(5, "USB Audio Device: - (hw:2,0)", 1, 48000.0, "ALSA")]


def test_mic_lookup_by_index_name_or_part_of_a_name():
    assert find_input_device(3, DEVICES).index == 3
    assert find_input_device("5", DEVICES).index == 5
    assert find_input_device("alc892", DEVICES).index == 0
    assert find_input_device("hw:2", DEVICES).index == 5


def test_mic_lookup_failures_list_what_exists():
    with pytest.raises(BadInput, match=r"no input device matches 'webcam'.*ALC892.*hw:1,0"):
        find_input_device("webcam", DEVICES)
    with pytest.raises(BadInput, match=r"matches 2 devices"):
        find_input_device("USB", DEVICES)
    with pytest.raises(BadInput, match=r"no input device with index 9"):
        find_input_device(9, DEVICES)
    with pytest.raises(BadInput, match=r"no input devices at all"):
        find_input_device("usb", [])


# -- the microphone path, through the virtual ALSA device ------------------------------------

MIC_READ = """
import json, sys, numpy as np
from edge.capture.mic import MicSource
wanted, rate, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
source = MicSource("filemic", sample_rate=rate, block_seconds=0.1, queue_blocks=64)
blocks = []
for block in source:
    blocks.append(block)
    if sum(b.samples.shape[0] for b in blocks) >= wanted:
        source.close()
np.save(out, np.concatenate([b.samples for b in blocks])[:wanted])
print(json.dumps({"times": [b.start_time for b in blocks], "offsets": [b.offset_s for b in blocks],
                  "gaps": [b.discontinuity for b in blocks], "rate": source.rate,
                  "stats": source.stats.snapshot()}))
"""


def test_microphone_delivers_the_same_samples_as_the_file(tmp_path):
    audio = noise(2.0, seed=7)
    env = virtual_mic_env(tmp_path, write_infile(tmp_path / "mic.raw", audio))
    out = tmp_path / "captured.npy"
    result = run_python(MIC_READ, env, args=[str(audio.shape[0]), "16000", str(out)])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert np.array_equal(np.load(out), audio)
    assert report["rate"] == 16000
    assert not any(report["gaps"]) and all(o is None for o in report["offsets"])
    assert report["stats"]["device_errors"] == 0


def test_microphone_at_48k_is_resampled_to_16k(tmp_path):
    audio = noise(1.0, 48000, seed=8)
    env = virtual_mic_env(tmp_path, write_infile(tmp_path / "mic48.raw", audio))
    out = tmp_path / "captured.npy"
    wanted = SAMPLE_RATE - FILTER_HALF_LENGTH - 16  # the last outputs need samples past the end
    result = run_python(MIC_READ, env, args=[str(wanted), "48000", str(out)])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["rate"] == 48000
    np.testing.assert_allclose(np.load(out), resample(audio, 48000)[:wanted], atol=1e-5)


MIC_MISSING = """
import json, logging, threading, time
logging.basicConfig(level=logging.WARNING)
from edge.capture.mic import MicSource
source = MicSource("no-such-microphone", retry_initial_s=0.05, retry_max_s=0.4)
crashed = []
def consume():
    try:
        for _ in source:
            pass
    except BaseException as err:
        crashed.append(repr(err))
worker = threading.Thread(target=consume)
worker.start()
time.sleep(1.5)
errors_at_1_5s = source.stats.device_errors
source.close()
worker.join(3)
print(json.dumps({"errors": errors_at_1_5s, "crashed": crashed, "alive": worker.is_alive(),
                  "last_error": source.stats.last_error}))
"""


@pytest.mark.slow  # waits out the retries, in a subprocess
def test_missing_microphone_is_retried_with_backoff_and_reported_not_a_crash(tmp_path):
    env = virtual_mic_env(tmp_path, write_infile(tmp_path / "mic.raw", noise(0.5)))
    result = run_python(MIC_MISSING, env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert not report["crashed"] and not report["alive"]
    # Backoff 0.05, 0.1, 0.2, 0.4, 0.4 ...: a handful of attempts in 1.5 s, not hundreds.
    assert 3 <= report["errors"] <= 8
    assert "no-such-microphone" in report["last_error"] and DEVICE in report["last_error"]
    assert "retrying in" in result.stderr


@pytest.mark.slow  # PortAudio with the virtual microphone, in a subprocess
def test_devices_command_lists_the_virtual_microphone(tmp_path):
    env = virtual_mic_env(tmp_path, write_infile(tmp_path / "mic.raw", noise(0.5)))
    listed = run_cli(["devices"], env)
    assert listed.returncode == 0, listed.stderr
    assert DEVICE in listed.stdout and "44100" in listed.stdout
    found = run_cli(["devices", "--find", "filem"], env)
    assert found.returncode == 0 and DEVICE in found.stdout
    missing = run_cli(["devices", "--find", "webcam"], env)
    assert missing.returncode == 2
    assert "no input device matches 'webcam'" in missing.stderr and DEVICE in missing.stderr
    assert "Traceback" not in missing.stderr


def test_open_source_builds_what_the_config_names(tmp_path):
    from edge.capture import open_source
    from edge.config import config_from_flags

    path = tmp_path / "replay.wav"
    write_audio(path, noise(0.3))
    config = config_from_flags(machine="fan", file=path, speed="max")
    source = open_source(config.streams[0].source)
    assert isinstance(source, FileSource)
    assert sum(b.samples.shape[0] for b in source) == round(0.3 * SAMPLE_RATE)
