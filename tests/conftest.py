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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--screenshots", metavar="DIR", default=None,
                     help="the browser test (tests/test_browser.py) also saves the README's "
                          "screenshots here: overview.png, episode.png (docs/img)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_clips: uses the real DCASE sample clips (set by "
                                       "conftest on every test that asks for sample_dir)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of the real sample clips ``real_clips`` (before ``-m`` selects), so that
    a run from a plain copy of the checkout can take them all: ``-m "not slow or real_clips"``."""
    for item in items:
        if "sample_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_clips)
