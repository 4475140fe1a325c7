"""Shared fixtures. Tests write under tmp_path only; real parts, no skips in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "dcase2023_sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 28 real DCASE 2023 clips in the repository; a missing copy fails, never skips."""
    if not SAMPLE_DIR.is_dir() or not any(SAMPLE_DIR.rglob("*.wav")):
        pytest.fail(f"real sample clips not found at {SAMPLE_DIR}: they ship with the "
                    "repository (tests/data/dcase2023_sample/)")
    return SAMPLE_DIR
