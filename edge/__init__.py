"""asd-edge runtime: everything the edge box runs, and what training shares with it.

This package never imports torch (tests/test_no_torch.py proves it).
"""

__version__ = "0.1.0"
