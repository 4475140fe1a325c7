"""Faults a plant meets after months unattended (issue 13), tried against the real parts: a
real Mosquitto, the daemon as a subprocess killed with SIGKILL, a state disk that is full.
docs/RELIABILITY.md lists each fault, its test here and its figure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _broker import Broker, Subscriber
from _pipeline import MACHINE, stats_setup

from edge.outputs.events import AlarmEvent
from edge.outputs.journal import read_journal

REPO = Path(__file__).resolve().parents[1]
NODE = "rel"
ALARM_TOPIC = f"asd-edge/{NODE}/{MACHINE}/00/alarm"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return stats_setup(tmp_path_factory.mktemp("reliability"))


def run_argv(setup, broker: Broker, state: Path) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "run", "--file", str(setup.stream), "--machine",
            MACHINE, "--models", str(setup.models), "--speed", "max", "--mqtt", broker.url,
            "--node", NODE, "--state-dir", str(state), "--no-metrics"]


def journal_events(state: Path) -> list[AlarmEvent]:
    path = state / "journal.jsonl"
    return read_journal(path) if path.exists() else []


def raises_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b'"type":"raise"')
    except FileNotFoundError:
        return 0


def start_and_kill_after_a_raise(argv: list[str], journal: Path, timeout_s: float = 60.0
                                 ) -> None:
    """Start the daemon; SIGKILL it as soon as the journal holds one more raise."""
    before = raises_in(journal)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while raises_in(journal) == before:
            assert process.poll() is None, "the daemon ended before it raised an alarm"
            assert time.monotonic() < deadline, "no alarm was journaled"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigkill_right_after_an_alarm_loses_nothing_and_clears_at_restart(setup, tmp_path):
    """Killed with SIGKILL within a millisecond of each alarm reaching the journal, three
    times; then a run to the end. Every event raised reaches Mosquitto, each event_id once
    (a re-send keeps its event_id), and every episode a kill left open is cleared at the next
    start with reason "restart"."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC], persistent=True)
    state = tmp_path / "state"
    argv = run_argv(setup, broker, state)
    kills = 3
    try:
        subscriber.wait_subscribed()
        for _ in range(kills):
            start_and_kill_after_a_raise(argv, state / "journal.jsonl")
        done = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        journaled = journal_events(state)
        wanted = {event.event_id for event in journaled}
        received = subscriber.wait_for(
            lambda ms: wanted <= {AlarmEvent.from_json(m.payload).event_id for m in ms},
            timeout_s=20, what="every journaled event")
        delivered = [AlarmEvent.from_json(m.payload) for m in received]
    finally:
        subscriber.close()
        broker.kill()
    by_event = {event.event_id: event for event in delivered}
    assert set(by_event) == wanted  # nothing lost, nothing the journal does not know
    # one event per (episode, type): a duplicate is only ever the same event_id again
    assert len({(e.id, e.type) for e in by_event.values()}) == len(by_event)
    raised = {e.id for e in by_event.values() if e.type == "raise"}
    cleared = {e.id for e in by_event.values() if e.type == "clear"}
    assert len(raised) == kills + 1 and raised == cleared
    restarts = [e for e in by_event.values() if e.explanation.get("reason") == "restart"]
    assert len(restarts) == kills  # each kill left its episode open; the next start closed it
