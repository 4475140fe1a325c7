"""A microphone without sound hardware: the ALSA ``file`` plugin fed from a raw file.

PortAudio lists its devices when it is initialised (on ``import sounddevice``), so the
asoundrc and the infile must exist before that import: every microphone test runs its code in
a subprocess whose ``XDG_CONFIG_HOME`` points at a temporary folder holding the asoundrc. The
device (``filemic``) delivers the infile's samples bit-exactly, unpaced, and stale data past
the end of the file: read only as many samples as the file holds.

A missing PortAudio library fails the test (it is a declared dependency), never skips.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE = "filemic"


def require_portaudio() -> None:
    if ctypes.util.find_library("portaudio") is None:
        pytest.fail("the PortAudio library is missing, so the microphone path cannot be "
                    "tested: apt-get install libportaudio2")


def write_infile(path: Path, samples: np.ndarray) -> Path:
    """Headerless float32 little-endian mono samples, as the device will deliver them."""
    np.asarray(samples, dtype="<f4").tofile(path)
    return path


def virtual_mic_env(tmp_path: Path, infile: Path) -> dict[str, str]:
    """An environment in which PortAudio sees ``filemic`` reading ``infile``."""
    require_portaudio()
    config_home = tmp_path / "xdg"
    (config_home / "alsa").mkdir(parents=True, exist_ok=True)
    (config_home / "alsa" / "asoundrc").write_text(textwrap.dedent(f"""\
        pcm.{DEVICE} {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{infile}"
            format "raw"
        }}
        """))
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(config_home)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 60.0,
               args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``env`` (the virtual microphone's)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *(args or [])],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def run_cli(argv: list[str], env: dict[str, str],
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``asd-edge ARGV`` in a fresh interpreter with ``env``."""
    return run_python("import sys\nfrom edge.cli import main\nsys.exit(main(sys.argv[1:]))",
                      env, timeout, argv)


class PacedWriter:
    """Feeds a FIFO ``infile`` with ``samples`` at ``rate`` Hz in real time, ``block`` frames a
    write, then closes it:
    a microphone that stops delivering. ALSA's file device then replays its last buffer
    forever, unpaced. PortAudio opens and closes every device once when it lists them, so a
    write that finds the reader gone opens the FIFO again and goes on. ``block`` must be the
    frames per block the microphone is opened with: the device reads one block at a time, and
    a read the FIFO can only partly answer leaves stale samples in the rest of the block.
    ``stopped_at``: the wall-clock time (``time.time()``) the FIFO was closed."""

    def __init__(self, fifo: Path, samples: np.ndarray, rate: int = 16000,
                 block: int = 1600) -> None:
        os.mkfifo(fifo)
        self.fifo = fifo
        self.data = np.asarray(samples, dtype="<f4")
        self.rate = rate
        self.block = block
        self.stopped_at: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="paced-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sent = 0
        started: float | None = None
        try:
            while sent < self.data.size:
                try:
                    with self.fifo.open("wb", buffering=0) as out:  # blocks until a reader
                        while sent < self.data.size:
                            chunk = self.data[sent:sent + self.block]
                            out.write(chunk.tobytes())
                            sent += chunk.size
                            started = started or time.monotonic()
                            due = started + sent / self.rate - time.monotonic()
                            if due > 0:
                                time.sleep(due)
                        self.stopped_at = time.time()
                except BrokenPipeError:  # PortAudio's look at the device: open it again
                    started = None
        except BaseException as err:  # reported by the test, not lost in a thread
            self.error = err

    def wait_stopped(self, timeout_s: float) -> float:
        self.thread.join(timeout_s)
        assert self.error is None, f"the FIFO writer failed: {self.error!r}"
        assert self.stopped_at is not None, "the FIFO writer did not finish"
        return self.stopped_at
