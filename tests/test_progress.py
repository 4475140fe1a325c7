"""Progress bars: on a terminal a long command shows one; piped (a script, a log) it does not,
unless asked with --progress; --json never gets one."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.synth import synthesize_dataset

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "valve"
BAR = "enroll valve section_00"


@pytest.fixture(scope="module")
def normal_clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    data = synthesize_dataset(root / "data", [MACHINE], sections=1, n_train=3,
                              n_target_train=0, n_test=1, seed=2)
    return data / MACHINE / "train"


def _enroll_args(clips: Path, models: Path) -> list[str]:
    return ["enroll", "--dir", str(clips), "--machine", MACHINE, "--section", "0",
            "--models", str(models), "--domain", "source"]


def _run(args: list[str], terminal: bool) -> tuple[int, str]:
    """Run ``asd-edge ARGS`` in a fresh process, its stderr a pseudo-terminal or a pipe; returns
    the exit status and what it wrote to stderr."""
    command = [sys.executable, "-m", "edge.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stderr
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_the_bar_and_a_pipe_does_not(normal_clips, tmp_path) -> None:
    status, seen = _run(_enroll_args(normal_clips, tmp_path / "tty"), terminal=True)
    assert status == 0, seen
    assert f"\r{BAR}  0/3 [--------------------]   0%" in seen, seen
    assert f"\r{BAR}  3/3 [####################] 100%" in seen, seen
    status, piped = _run(_enroll_args(normal_clips, tmp_path / "pipe"), terminal=False)
    assert status == 0, piped
    assert BAR not in piped and "\r" not in piped, piped


def test_progress_flag_forces_the_bar_and_json_never_gets_one(normal_clips, tmp_path,
                                                              capsys) -> None:
    # pytest's captured stderr is no terminal, like a pipe
    assert main([*_enroll_args(normal_clips, tmp_path / "plain")]) == 0
    assert BAR not in capsys.readouterr().err
    assert main([*_enroll_args(normal_clips, tmp_path / "forced"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"\r{BAR}  3/3 [####################] 100%") == 1, err
    assert err.endswith("\n"), err  # the bar's line is ended
    bundle = tmp_path / "forced" / MACHINE
    assert main(["bundle", "verify", str(bundle), "--json", "--progress"]) == 0
    assert "\r" not in capsys.readouterr().err  # verify draws none; --json stays clean
