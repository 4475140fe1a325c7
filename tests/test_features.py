"""The shared front end: shapes, chunked streaming equals the whole clip, mel and linear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio import SAMPLE_RATE, read_audio
from edge.features import (
    DEFAULT_FRONT_END,
    LOG_MEL_FRONT_END,
    FrontEnd,
    StreamingSpectrogram,
    patches,
    spectrogram,
)


def test_shapes_and_units_on_a_real_clip(sample_dir: Path) -> None:
    wave = read_audio(next((sample_dir / "ToyCar" / "test").glob("*.wav")))  # 12 s
    spec = spectrogram(wave)
    assert spec.shape == (DEFAULT_FRONT_END.n_bins, 1 + (12 * SAMPLE_RATE - 1024) // 512)
    assert spec.shape[0] == 500  # 200 Hz .. 8 kHz in 15.6 Hz bins
    assert spec.dtype == np.float32 and np.isfinite(spec).all()
    assert spec.min() >= np.log(DEFAULT_FRONT_END.log_floor) - 1e-6
    mel = spectrogram(wave, LOG_MEL_FRONT_END)
    assert mel.shape == (128, spec.shape[1])


def test_full_scale_sine_has_unit_magnitude() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    spec = spectrogram(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32))
    edges = DEFAULT_FRONT_END.band_edges_hz()
    row = int(np.argmax(spec.mean(axis=1)))
    assert edges[row, 0] <= 1000.0 <= edges[row, 1]
    assert np.exp(spec[row]).mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("front_end", [DEFAULT_FRONT_END, LOG_MEL_FRONT_END])
def test_streaming_in_chunks_equals_the_whole_real_clip(sample_dir: Path, front_end) -> None:
    wave = read_audio(next((sample_dir / "valve" / "test").glob("*.wav")))
    whole = spectrogram(wave, front_end)
    stream = StreamingSpectrogram(front_end)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(wave.size, size=40, replace=False))
    pieces = [stream.push(chunk) for chunk in np.split(wave, cuts)]
    streamed = np.concatenate(pieces, axis=1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12))
def test_streaming_any_chunking(chunk_sizes: list[int]) -> None:
    rng = np.random.default_rng(len(chunk_sizes))
    wave = rng.standard_normal(sum(chunk_sizes)).astype(np.float32) * 0.1
    front_end = FrontEnd(n_fft=256, hop_length=100)
    stream = StreamingSpectrogram(front_end)
    out = np.concatenate([stream.push(c) for c in np.split(wave, np.cumsum(chunk_sizes)[:-1])],
                         axis=1)
    np.testing.assert_allclose(out, spectrogram(wave, front_end), atol=1e-5)


def test_patches() -> None:
    spec = np.arange(3 * 100, dtype=np.float32).reshape(3, 100)
    out = patches(spec, patch_frames=64, patch_hop=16)
    assert out.shape == (3, 3, 64)  # starts 0, 16, 32
    np.testing.assert_array_equal(out[1], spec[:, 16:80])
    assert patches(spec[:, :10], 64, 16).shape == (0, 3, 64)


def test_bad_front_end_values_are_refused() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        FrontEnd(f_max=9000.0)
    with pytest.raises(ValueError, match="extra"):
        FrontEnd(nfft=512)  # type: ignore[call-arg]
