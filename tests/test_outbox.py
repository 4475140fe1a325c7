"""The durable outbox (what waits for the broker) and the local journal (what is kept)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.errors import BadInput, RuntimeFailure
from edge.outputs import FanOut
from edge.outputs.events import AlarmEvent, EventWindow, SignalState
from edge.outputs.journal import Journal, read_journal, read_signals
from edge.outputs.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]


def test_messages_come_out_in_order_and_leave_only_when_removed(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    seqs = [outbox.put(f"t/{i}", f"m{i}".encode()) for i in range(5)]
    assert seqs == sorted(seqs)
    assert [item.payload for item in outbox.peek()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [item.topic for item in outbox.peek(after_seq=seqs[2], limit=1)] == ["t/3"]
    outbox.remove(seqs[0])
    outbox.remove(seqs[0])  # a duplicate acknowledgement is harmless
    assert outbox.depth() == 4 and outbox.size_bytes() == 8
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3")
    assert [item.payload for item in reopened.peek()] == [b"m1", b"m2", b"m3", b"m4"]
    assert all(item.qos == 1 and not item.retain for item in reopened.peek())


def test_written_messages_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from edge.outputs.outbox import Outbox
        outbox = Outbox({str(path)!r})
        for i in range(20):
            outbox.put("t", b"event %d" % i)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == -signal.SIGKILL
    assert [item.payload for item in Outbox(path).peek()] == [b"event %d" % i for i in range(20)]


def test_a_full_outbox_drops_the_oldest_and_says_so(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_rows=5, max_bytes=1000)
    with caplog.at_level(logging.WARNING, logger="edge.outputs.outbox"):
        for i in range(8):
            outbox.put("t", b"%d" % i)
    assert [item.payload for item in outbox.peek()] == [b"3", b"4", b"5", b"6", b"7"]
    assert outbox.dropped == 3
    assert "is full" in caplog.text and "dropped the 1 oldest" in caplog.text

    by_bytes = Outbox(tmp_path / "bytes.sqlite3", max_rows=100, max_bytes=250)
    for i in range(5):
        by_bytes.put("t", bytes([i]) * 100)
    assert by_bytes.size_bytes() == 200 and by_bytes.depth() == 2
    assert [item.payload[0] for item in by_bytes.peek()] == [3, 4]
    with pytest.raises(RuntimeFailure, match="larger than the outbox's max_bytes=250"):
        by_bytes.put("t", b"x" * 251)


def test_an_unusable_outbox_path_is_a_bad_input_unless_memory_will_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BadInput, match="cannot open the outbox"):
        Outbox(blocker / "outbox.sqlite3")
    # the daemon's choice: monitoring goes on with the messages in memory, and says why
    degraded = Outbox(blocker / "outbox.sqlite3", memory_if_unusable=True)
    assert degraded.unusable is not None and "free space" in degraded.unusable
    degraded.put("t", b"kept")
    assert [item.payload for item in degraded.peek()] == [b"kept"]
    with pytest.raises(BadInput, match="max_rows=0"):
        Outbox(tmp_path / "o.sqlite3", max_rows=0)


def test_journal_keeps_every_event_as_a_json_line(tmp_path: Path) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    events = [AlarmEvent(id="ep", event_id=f"e{i}", type=kind, time=now, node="n",
                         machine="fan", section="00", score=0.9, threshold=0.5,
                         window=EventWindow(start_utc=now, end_utc=now, start_s=0.0, end_s=10.0),
                         provider="CPUExecutionProvider", explanation={}, clip=None)
              for i, kind in enumerate(["raise", "clear"])]
    path = tmp_path / "journal" / "events.jsonl"
    journal = Journal(path)
    full_disk = Journal(tmp_path / "other.jsonl")
    full_disk.close()  # writing to it fails: the journal after it must still get every event
    outputs = FanOut([full_disk, journal])
    for event in events:
        outputs.publish_event(event)
    outputs.close()
    with path.open("ab") as torn:  # a write cut short by a crash
        torn.write(b'{"schema_version":1,"id":')
    assert read_journal(path) == events
    assert path.read_bytes().count(b"\n") == 2


def test_signal_changes_are_journaled_once_each_and_read_journal_still_gives_events(
        tmp_path: Path) -> None:
    """When the microphone was dead is in the journal: a record per change of a stream's signal
    state (the ok every start publishes only after a no_signal, a re-publish never), across a
    restart; the alarm events around them read as before."""
    path = tmp_path / "journal.jsonl"
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def signal(state: str, reason: str | None, machine: str = "gearbox") -> SignalState:
        return SignalState(node="box", machine=machine, section="00", state=state,
                           reason=reason, since=now, time=now)

    event = AlarmEvent(id="ep", event_id="ev", type="raise", time=now, node="box",
                       machine="gearbox", section="00", score=2.0, threshold=1.0,
                       window=EventWindow(start_utc=now, end_utc=now, start_s=0.0, end_s=1.0),
                       provider="CPUExecutionProvider", explanation={}, clip=None)
    journal = Journal(path)
    journal.publish_signal(signal("ok", None))  # the daemon's start: nothing to record
    journal.publish_event(event)
    journal.publish_signal(signal("no_signal", "frozen"))
    journal.publish_signal(signal("no_signal", "frozen"))  # again after a reconnect
    journal.publish_signal(signal("no_signal", "device_lost"))  # the reason changed
    journal.publish_signal(signal("no_signal", "silence", machine="fan"))
    journal.close()
    restarted = Journal(path)  # the next start: gearbox is ok again, fan still silent
    restarted.publish_signal(signal("ok", None))
    restarted.publish_signal(signal("ok", None, machine="fan"))
    restarted.publish_signal(signal("no_signal", "silence", machine="fan"))
    restarted.close()
    assert [(s.machine, s.state, s.reason) for s in read_signals(path)] == [
        ("gearbox", "no_signal", "frozen"), ("gearbox", "no_signal", "device_lost"),
        ("fan", "no_signal", "silence"), ("gearbox", "ok", None), ("fan", "ok", None),
        ("fan", "no_signal", "silence")]
    assert read_signals(path)[0] == signal("no_signal", "frozen")  # every field kept
    assert read_journal(path) == [event]
    assert all(line.startswith(b'{"record":"signal",')
               for line in path.read_bytes().splitlines()[1:])
