"""Progress bars on stderr for the commands that run longer than a few seconds.

One switch, set once by the command line (``configure``): on when stderr is a terminal or with
``--progress``; off under ``--json``, when stderr is a pipe or a file, and in library use (the
default), so scripts and logs never see carriage returns. Library code wraps its slow loops in
``track(items, label)`` (or a ``Bar`` where it counts by itself); with the switch off both cost
nothing.

    evaluate fan: test clips  37/120 [######--------------]  31%  12 s, ~27 s left
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

Item = TypeVar("Item")

WIDTH = 20  # characters of the bar itself
MIN_INTERVAL = 0.1  # seconds between redraws


class Switch:
    """Whether bars are drawn (``configure``); off until a command line turns it on."""

    enabled = False


def configure(enabled: bool) -> None:
    Switch.enabled = enabled


def wanted(flag: bool = False, json_output: bool = False, stream: TextIO | None = None) -> bool:
    """``--progress`` forces bars; otherwise they show on a terminal unless ``--json``."""
    stream = sys.stderr if stream is None else stream
    return flag or (not json_output and stream.isatty())


class Bar:
    """One line on stderr, redrawn in place: ``label done/total [###---] pct elapsed, left``.

    A no-op when bars are off. ``update(done)`` sets the count, ``advance(n)`` adds to it;
    ``close()`` (or leaving the ``with`` block) ends the line."""

    def __init__(self, label: str, total: int | None = None,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = sys.stderr if stream is None else stream
        self.active = Switch.enabled
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.drawn: int | None = None  # the count last drawn

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def update(self, done: int) -> None:
        self.done = done
        if not self.active:
            return
        now = time.monotonic()
        if now - self.drawn_at >= MIN_INTERVAL or done == self.total:
            self.drawn_at = now
            self._draw(now)

    def close(self) -> None:
        if self.active and self.drawn is not None:
            if self.drawn != self.done:
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        self.active = False

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        text = f"\r{self.label}  {self.done}"
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(round(fraction * WIDTH))
            text += (f"/{self.total} [{'#' * filled}{'-' * (WIDTH - filled)}] "
                     f"{100 * fraction:3.0f}%  {elapsed:.0f} s")
            if 0 < self.done < self.total:
                text += f", ~{elapsed * (self.total - self.done) / self.done:.0f} s left"
        else:
            text += f"  {elapsed:.0f} s"
        self.stream.write(text + "\x1b[K")  # clear what a longer previous line left
        self.stream.flush()
        self.drawn = self.done


def track(items: Iterable[Item], label: str, total: int | None = None) -> Iterator[Item]:
    """Yield ``items``, drawing a bar of ``label`` as they go (nothing when bars are off)."""
    if not Switch.enabled:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Bar(label, total) as bar:
        bar.update(0)
        for item in items:
            yield item
            bar.advance()
