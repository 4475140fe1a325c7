"""Streaming windows: a window cut from a stream holds exactly the offline clip's patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import read_audio
from edge.features import (
    DEFAULT_FRONT_END,
    DEFAULT_PATCHING,
    LOG_MEL_FRONT_END,
    FrontEnd,
    patches,
    spectrogram,
)
from edge.scoring.spectral import MODULATION_FRONT_END
from edge.streaming import StreamingWindows, window_patches_for, window_span_samples


def test_window_of_a_real_clip_stream_equals_offline(sample_dir: Path) -> None:
    wave = read_audio(next((sample_dir / "ToyTrain" / "test").glob("*.wav")))  # 12 s
    n_window = window_patches_for(10.0, DEFAULT_FRONT_END, DEFAULT_PATCHING)
    assert n_window == 16
    stream = StreamingWindows(DEFAULT_FRONT_END, DEFAULT_PATCHING, n_window, hop_patches=1,
                              extra_front_ends={"mel": LOG_MEL_FRONT_END,
                                                "modulation": MODULATION_FRONT_END})
    windows = []
    rng = np.random.default_rng(1)
    position = 0
    while position < wave.size:
        step = int(rng.integers(800, 12000))
        new = stream.push(wave[position:position + step])
        position += step
        # a stand-in embedder at our own seam: per-patch mean and std of each row
        windows += stream.accept(new.mean(axis=2), new.std(axis=2))
    assert len(windows) >= 5
    for window in windows:
        assert window.end_sample - window.start_sample == window_span_samples(
            n_window, DEFAULT_FRONT_END, DEFAULT_PATCHING)
        clip = wave[window.start_sample:window.end_sample]
        offline = patches(spectrogram(clip), DEFAULT_PATCHING.patch_frames,
                          DEFAULT_PATCHING.patch_hop)
        assert offline.shape[0] == n_window
        np.testing.assert_allclose(window.section_embeddings, offline.mean(axis=2), atol=1e-5)
        np.testing.assert_allclose(window.attribute_embeddings, offline.std(axis=2), atol=1e-5)
        np.testing.assert_allclose(window.spectrogram, spectrogram(clip), atol=1e-5)
        np.testing.assert_allclose(window.extra_frames["mel"], spectrogram(clip, LOG_MEL_FRONT_END),
                                   atol=1e-5)
        # a front end on a finer frame grid (1 ms hops) gets the offline clip's frames too
        np.testing.assert_allclose(window.extra_frames["modulation"],
                                   spectrogram(clip, MODULATION_FRONT_END), atol=1e-5)


def test_an_extra_front_end_whose_hop_does_not_divide_the_model_hop_is_refused() -> None:
    odd = FrontEnd(n_fft=64, hop_length=24, f_min=250.0, f_max=8000.0)
    with pytest.raises(ValueError, match="hop_length 24 must divide"):
        StreamingWindows(DEFAULT_FRONT_END, DEFAULT_PATCHING, 16, extra_front_ends={"x": odd})


def test_hop_sets_how_often_windows_come() -> None:
    wave = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
    counts = {}
    for hop in (1, 2, 4):
        stream = StreamingWindows(DEFAULT_FRONT_END, DEFAULT_PATCHING, 16, hop_patches=hop,
                                  embeds=False)
        n = 0
        for chunk in np.array_split(wave, 40):
            stream.push(chunk)
            n += len(stream.accept(None, None))
        counts[hop] = n
    # 20 s gives 1 + (624 - 64) // 16 = 36 patches, the first window at patch 16
    assert counts == {1: 21, 2: 11, 4: 6}


def test_an_extra_front_end_equal_to_the_model_one_gets_the_same_frames() -> None:
    wave = np.random.default_rng(2).standard_normal(16000 * 14).astype(np.float32) * 0.1
    stream = StreamingWindows(LOG_MEL_FRONT_END, DEFAULT_PATCHING, 16, hop_patches=2,
                              embeds=False, extra_front_ends={"stats": LOG_MEL_FRONT_END})
    windows = []
    for chunk in np.array_split(wave, 23):
        stream.push(chunk)
        windows += stream.accept(None, None)
    assert windows
    for window in windows:
        clip = wave[window.start_sample:window.end_sample]
        np.testing.assert_allclose(window.extra_frames["stats"],
                                   spectrogram(clip, LOG_MEL_FRONT_END), atol=1e-5)
        np.testing.assert_array_equal(window.extra_frames["stats"], window.spectrogram)
