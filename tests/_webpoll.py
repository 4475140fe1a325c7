"""The web page's overview, polled as a browser would while a command runs."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def polled_overview(port: int, every_s: float = 0.1) -> Iterator[list[dict]]:
    """Within the block, ``/api/overview`` on ``127.0.0.1:port`` is fetched every ``every_s``;
    the list it yields holds every answer (none while nothing listens)."""
    seen: list[dict] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview",
                                            timeout=2) as response:
                    seen.append(json.loads(response.read()))
            except OSError:
                pass
            done.wait(every_s)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()
