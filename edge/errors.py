"""The project's error types and their exit codes.

A user mistake (bad path, bad value, bad file) is a ``BadInput``: the CLI prints its one-line
message and exits with 2. A failure at run time that is not the user's (a broken dependency, a
crash in a backend) is a ``RuntimeFailure``: exit 1. Messages name the bad value and the fix.
"""

from __future__ import annotations


class AsdEdgeError(Exception):
    """Base class: an error with a one-line message meant for the user."""

    exit_code = 1


class BadInput(AsdEdgeError):
    """Bad input or usage: the message names the value and what to do. Exit status 2."""

    exit_code = 2


class RuntimeFailure(AsdEdgeError):
    """A failure at run time that the user did not cause. Exit status 1."""

    exit_code = 1
