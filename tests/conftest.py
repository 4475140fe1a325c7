"""Shared fixtures. Tests write under tmp_path only; real parts, no skips in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dcase2023_sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 28 real DCASE 2023 clips beside the checkout; a missing copy fails, never skips."""
    if not SAMPLE_DIR.is_dir():
        pytest.fail(f"real sample clips not found at {SAMPLE_DIR}: the checkout must sit beside "
                    "shared/ (as in CI)")
    return SAMPLE_DIR
