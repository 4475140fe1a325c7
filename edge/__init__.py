"""asd-edge runtime: everything the edge box runs, and what training shares with it.

This package never imports torch (tests/test_no_torch.py proves it).
"""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = version("asd-edge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
