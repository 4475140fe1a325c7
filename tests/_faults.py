"""The fault-injection suite (issue 13): the real daemon (``asd-edge run`` as a subprocess)
replays a long recording with a fault every minute to a real Mosquitto while something goes
wrong, and each scenario tallies the events raised (the daemon's journal, every run) against
those a subscriber received.

The scenarios are plain functions of a size, so ``tests/test_fault_injection.py`` runs them
CI-sized and ``bench/fault_injection.py`` runs them at full size (100 broker restarts, 20
SIGKILLs, an hour of audio) and writes the figures docs/RELIABILITY.md quotes.

Nothing here is a mock: the broker is mosquitto, the stall is a loopback TCP proxy in front of
it, the full disk is the kernel refusing writes past ``RLIMIT_FSIZE`` (what ``write(2)`` does
on a full disk, ``EFBIG`` in place of ``ENOSPC``; no root or mount needed).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from _broker import Broker, Subscriber, free_port
from _pipeline import MACHINE, StatsSetup, stats_setup

from edge.outputs.events import AlarmEvent
from edge.outputs.journal import read_journal

REPO = Path(__file__).resolve().parents[1]
NODE = "fi"
ALARM_TOPIC = f"asd-edge/{NODE}/{MACHINE}/00/alarm"
FAULT_EVERY_S = 60.0  # the recording: the 60 s stats_setup stream (a fault at 25-40 s), looped


@dataclass
class Recording:
    setup: StatsSetup
    path: Path
    minutes: int


def long_recording(root: Path, minutes: int) -> Recording:
    """A statistics bundle and ``minutes`` of its unit's sound with one fault a minute: two
    alarm events (raise, clear) per minute at the bundle's clip-quantile thresholds."""
    setup = stats_setup(root / "setup")
    audio, rate = sf.read(setup.stream, dtype="float32")
    path = root / f"long_{minutes}min.wav"
    sf.write(path, np.tile(audio, minutes), rate, subtype="PCM_16")
    return Recording(setup, path, minutes)


@dataclass
class Tally:
    """Events raised (journaled by the daemon, any run) against events delivered (seen by a
    subscriber); ``duplicates`` counts re-deliveries, which must carry the same event_id."""

    scenario: str
    raised: int
    delivered: int
    lost: list[str]
    duplicates: int
    conflicting: int  # two event_ids for one (episode, type): a duplicate that is not one
    unknown: int  # delivered but never journaled
    runs: int
    seconds: float
    notes: dict[str, object] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict, repr=False)  # for a failure's message

    def __str__(self) -> str:
        return (f"{self.scenario}: {self.delivered} of {self.raised} delivered; {self.notes}"
                + "".join(f"\n--- {name} (last lines)\n{text}" for name, text in self.logs.items()))

    @property
    def ok(self) -> bool:
        return not self.lost and not self.conflicting and not self.unknown

    def row(self) -> dict[str, object]:
        row = {**asdict(self), "lost": len(self.lost), "ok": self.ok}
        del row["logs"]
        return row


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


def tally(scenario: str, journal: list[AlarmEvent], received: list[AlarmEvent], runs: int,
          seconds: float, root: Path | None = None, **notes: object) -> Tally:
    """``root``: the scenario's folder, whose daemon and broker logs a failure message shows."""
    raised = {event.event_id for event in journal}
    delivered = {event.event_id for event in received}
    per_kind: dict[tuple[str, str], set[str]] = {}
    for event in received:
        per_kind.setdefault((event.id, event.type), set()).add(event.event_id)
    return Tally(scenario, len(raised), len(delivered & raised), sorted(raised - delivered),
                 len(received) - len(delivered),
                 sum(len(ids) - 1 for ids in per_kind.values()), len(delivered - raised),
                 runs, round(seconds, 1), dict(notes),
                 {} if root is None else {"daemon": _tail(root / "daemon.log"),
                                          "broker": _tail(root / "broker" / "mosquitto.log")})


def daemon_argv(recording: Recording, mqtt_url: str, state: Path, **mqtt: object
                ) -> list[str]:
    """``asd-edge run --config`` of one file stream at full speed; ``mqtt`` adds settings of
    the config's mqtt section (e.g. ``ack_timeout_s``)."""
    config = {
        "node": NODE, "models_dir": str(recording.setup.models), "state_dir": str(state),
        "streams": [{"source": {"type": "file", "path": str(recording.path), "speed": "max"},
                     "machine": MACHINE, "section": 0}],
        "mqtt": {"url": mqtt_url, **mqtt},
        "metrics": {"enabled": False},
    }
    state.mkdir(parents=True, exist_ok=True)
    path = state.parent / f"{state.name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return [sys.executable, "-m", "edge.cli", "run", "--config", str(path)]


def _limit_file_size(max_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec; Python itself ignores SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def start_daemon(argv: list[str], log: Path, max_file_bytes: int | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            preexec_fn=None if max_file_bytes is None else _limit_file_size(max_file_bytes))


def finish(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the daemon did not finish within {timeout_s} s") from None


def journal(state: Path) -> list[AlarmEvent]:
    path = state / "journal.jsonl"
    return read_journal(path) if path.exists() else []


def received_events(subscriber: Subscriber) -> list[AlarmEvent]:
    return [AlarmEvent.from_json(m.payload) for m in subscriber.on(ALARM_TOPIC)]


def wait_delivered(subscriber: Subscriber, wanted: set[str], timeout_s: float) -> None:
    """Until every wanted event_id has arrived or the time is up (the tally says what is
    missing; no failure here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wanted <= {event.event_id for event in received_events(subscriber)}:
            return
        time.sleep(0.05)


@contextmanager
def broker_and_subscriber(root: Path, broker: Broker | None = None, **login: str
                          ) -> Iterator[tuple[Broker, Subscriber]]:
    """A running broker and a persistent subscriber to everything of the node (``login``:
    its username and password at a broker that wants them)."""
    broker = broker or Broker(root / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [f"asd-edge/{NODE}/#"], persistent=True,
                            client_id=f"fi-{root.name}", **login)
    try:
        subscriber.wait_subscribed()
        yield broker, subscriber
    finally:
        subscriber.close()
        broker.kill()


# ---------------------------------------------------------------------------------------------
# A loopback TCP proxy that can stall or black-hole the broker connection


class StallProxy:
    """Forwards 127.0.0.1:port to the broker; ``delay_s`` holds every chunk that long in both
    directions (a slow link), ``blackhole`` swallows everything while set (connections stay
    open, nothing arrives: a broker that hangs or a link that silently drops)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.delay_s = 0.0
        self.blackhole = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    if self.blackhole.is_set():
                        continue
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=1)


# ---------------------------------------------------------------------------------------------
# The scenarios


class Sampler:
    """Samples a running daemon every ``every_s``: resident memory (MB), open files, and the
    outbox depth (read-only SQLite), for the soak's "flat" check."""

    def __init__(self, pid: int, outbox: Path, every_s: float = 0.5) -> None:
        self.pid, self.outbox, self.every_s = pid, outbox, every_s
        self.rows: list[tuple[float, float, int, int]] = []  # (t, rss_mb, fds, outbox)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        proc = Path(f"/proc/{self.pid}")
        while not self._stop.wait(self.every_s):
            try:
                status = (proc / "status").read_text()
                rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                fds = len(os.listdir(proc / "fd"))
            except (OSError, AttributeError):
                return  # the process has ended
            self.rows.append((time.monotonic() - start, rss_kb / 1024, fds, self.depth()))

    def depth(self) -> int:
        try:
            with sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=0.2) as db:
                return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            return -1

    def stop(self) -> dict[str, object]:
        """The summary: memory and open files over the first and the last quarter of the run
        (medians), the largest outbox depth and the last one."""
        self._stop.set()
        self._thread.join(timeout=2)
        if len(self.rows) < 4:
            return {"samples": len(self.rows)}
        rss = [row[1] for row in self.rows]
        fds = [row[2] for row in self.rows]
        quarter = len(rss) // 4
        return {"samples": len(self.rows),
                "rss_mb_first_quarter": round(float(np.median(rss[:quarter])), 1),
                "rss_mb_last_quarter": round(float(np.median(rss[-quarter:])), 1),
                "open_files_first_quarter": int(np.median(fds[:quarter])),
                "open_files_last_quarter": int(np.median(fds[-quarter:])),
                "open_files_max": max(fds),
                "outbox_depth_max": max(row[3] for row in self.rows),
                "outbox_depth_last": self.rows[-1][3]}


def broker_restarts(recording: Recording, root: Path, restarts: int, down_s: float = 0.2,
                    seed: int = 0) -> Tally:
    """The broker stopped and started ``restarts`` times at random moments while the daemon
    replays the whole recording at full speed (down ``down_s`` each time), then left up; the
    daemon's memory, open files and outbox depth sampled throughout (the soak)."""
    rng = random.Random(seed)
    state = root / "state"
    start = time.monotonic()
    with broker_and_subscriber(root) as (broker, subscriber):
        process = start_daemon(daemon_argv(recording, broker.url, state), root / "daemon.log")
        sampler = Sampler(process.pid, state / "outbox.sqlite")
        done = 0
        while done < restarts and process.poll() is None:
            time.sleep(rng.uniform(0.05, 0.3))
            broker.stop()  # SIGTERM: the broker keeps the subscriber's queued messages
            time.sleep(down_s)
            broker.start()
            done += 1
        code = finish(process, timeout_s=3600)
        soak = sampler.stop()
        soak["outbox_depth_at_exit"] = sampler.depth()  # what the next start would send
        wanted = {event.event_id for event in journal(state)}
        wait_delivered(subscriber, wanted, timeout_s=30)
        return tally("broker restarted during a replay", journal(state),
                     received_events(subscriber), runs=1, seconds=time.monotonic() - start,
                     root=root, restarts=done, exit_code=code,
                     audio_minutes=recording.minutes, **soak)


def _raises(state: Path) -> int:
    try:
        return (state / "journal.jsonl").read_bytes().count(b'"type":"raise"')
    except FileNotFoundError:
        return 0


def sigkills(recording: Recording, root: Path, kills: int, seed: int = 0) -> Tally:
    """The daemon SIGKILLed ``kills`` times and restarted: half of the kills at a random
    moment, half within a millisecond of a raise reaching the journal (between the journal,
    the outbox and the publish); then a run to the end."""
    rng = random.Random(seed)
    state = root / "state"
    start = time.monotonic()
    log = root / "daemon.log"
    with broker_and_subscriber(root) as (broker, subscriber):
        argv = daemon_argv(recording, broker.url, state)
        for number in range(kills):
            process = start_daemon(argv, log)
            if number % 2:
                before = _raises(state)
                deadline = time.monotonic() + 120
                while _raises(state) == before and process.poll() is None:
                    assert time.monotonic() < deadline, "no raise was journaled in 120 s"
                    time.sleep(0.001)
            else:
                time.sleep(rng.uniform(0.5, 4.0))
            process.kill()
            process.wait()
        code = finish(start_daemon(argv, log), timeout_s=600)
        events = journal(state)
        wait_delivered(subscriber, {event.event_id for event in events}, timeout_s=30)
        restarts = sum(1 for e in events if e.explanation.get("reason") == "restart")
        return tally("daemon SIGKILLed and restarted", events, received_events(subscriber),
                     runs=kills + 1, seconds=time.monotonic() - start, root=root, kills=kills,
                     exit_code=code, episodes_closed_at_restart=restarts)


def stalled_broker(recording: Recording, root: Path, stalls: int, stall_s: float,
                   delay_s: float = 0.02, ack_timeout_s: float = 2.0) -> Tally:
    """Between the daemon and the broker, a proxy that delays every chunk by ``delay_s`` and
    ``stalls`` times black-holes the connection for ``stall_s`` (nothing passes, the TCP
    connection stays open: without an answer timeout only the keep-alive would tell). The
    recording must last longer than the stalls (the daemon ends with the file)."""
    state = root / "state"
    start = time.monotonic()
    with broker_and_subscriber(root) as (broker, subscriber):
        proxy = StallProxy(broker.port)
        proxy.delay_s = delay_s
        try:
            process = start_daemon(daemon_argv(recording, proxy.url, state,
                                                ack_timeout_s=ack_timeout_s),
                                   root / "daemon.log")
            for _ in range(stalls):
                time.sleep(1.5)
                proxy.blackhole.set()
                time.sleep(stall_s)
                proxy.blackhole.clear()
            code = finish(process, timeout_s=600)
            wanted = {event.event_id for event in journal(state)}
            wait_delivered(subscriber, wanted, timeout_s=30)
        finally:
            proxy.close()
        return tally("broker stalled behind a black-holing proxy", journal(state),
                     received_events(subscriber), runs=1, seconds=time.monotonic() - start,
                     root=root, stalls=stalls, stall_s=stall_s, delay_s=delay_s,
                     ack_timeout_s=ack_timeout_s, exit_code=code,
                     reopened=(root / "daemon.log").read_text().count("stopped answering"))


def full_disk(recording: Recording, root: Path, max_file_bytes: int) -> Tally:
    """The state folder's files cannot grow past ``max_file_bytes`` (the kernel refuses the
    write, as on a full disk); 0: nothing can be written at all. Broker up: every event must
    still be delivered, and no partial clip may be left behind."""
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log = root / "daemon.log"
    with broker_and_subscriber(root) as (broker, subscriber):
        # Its output through a pipe: a log file in the same state could not be written either.
        process = subprocess.Popen(
            daemon_argv(recording, broker.url, state), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=_limit_file_size(max_file_bytes))
        output, _ = process.communicate(timeout=600)
        log.write_bytes(output)
        code = process.returncode
        # What the daemon decided (its last log line counts every raise and clear, written
        # down or not) against what the subscriber got.
        decided = _decided_in_log(log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(received_events(subscriber)) < decided:
            time.sleep(0.05)
        events = received_events(subscriber)
        journaled = journal(state)
        partial = sorted(p.name for p in state.rglob("*.partial*"))
        text = log.read_text(errors="replace")
        return Tally("state disk full", decided, len({e.event_id for e in events}),
                     lost=[f"{decided - len({e.event_id for e in events})} decided events "
                           "not delivered"] if len({e.event_id for e in events}) < decided
                     else [],
                     duplicates=len(events) - len({e.event_id for e in events}),
                     conflicting=0, unknown=0, runs=1,
                     seconds=round(time.monotonic() - start, 1),
                     notes={"max_file_bytes": max_file_bytes, "exit_code": code,
                            "journaled": len(journaled), "partial_files_left": partial,
                            "tracebacks": text.count("Traceback")})


def _decided_in_log(log: Path) -> int:
    """The alarm events the daemon decided, from its last line ("stopped: N windows scored,
    M events")."""
    found = re.findall(r"stopped: \d+ windows scored, (\d+) events",
                       log.read_text(errors="replace"))
    assert found, f"the daemon did not stop cleanly: {log.read_text(errors='replace')[-2000:]}"
    return int(found[-1])


def bad_credentials(recording: Recording, root: Path) -> Tally:
    """A broker that wants a password; the daemon first runs with a wrong one (its events
    wait in the outbox, the log names the cause once), then with the right one (the earlier
    events go out first). Meanwhile no secret may show anywhere a plant would look: the
    command line, the environment, the log, the metrics page, the MQTT messages, the state
    folder."""
    right, wrong = "right-Secret-7f3a9c", "wrong-Secret-0b2e4d"
    password_file = root / "passwd"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    for user, password in ((NODE, right), ("watcher", "watcher-pw")):
        subprocess.run(["mosquitto_passwd", *([] if password_file.exists() else ["-c"]), "-b",
                        str(password_file), user, password], check=True, capture_output=True)
    secret = root / "secret"
    state = root / "state"
    log = root / "daemon.log"
    start = time.monotonic()
    seen: dict[str, str] = {}
    broker = Broker(root / "broker", password_file=password_file)
    with broker_and_subscriber(root, broker, username="watcher",
                               password="watcher-pw") as (broker, subscriber):
        metrics_port = free_port()
        argv = daemon_argv(recording, broker.url, state, username=NODE,
                           password_file=str(secret))
        config = Path(argv[-1])
        settings = json.loads(config.read_text())
        settings["metrics"] = {"enabled": True, "port": metrics_port}
        config.write_text(json.dumps(settings))
        runs = []
        for password in (wrong, right):
            secret.write_text(password + "\n")
            secret.chmod(0o600)
            process = start_daemon(argv, log)
            seen.update(_while_running(process, metrics_port))
            runs.append(finish(process, timeout_s=600))
            seen[f"state after run {len(runs)}"] = "\n".join(
                p.read_text(errors="replace") for p in state.rglob("*")
                if p.is_file() and p.suffix in (".jsonl", ".yaml", ".json", ".txt"))
        events = journal(state)
        wait_delivered(subscriber, {event.event_id for event in events}, timeout_s=30)
        seen["log"] = log.read_text(errors="replace")
        seen["mqtt"] = "\n".join(m.payload.decode(errors="replace") for m in subscriber.messages)
        leaked = sorted(where for where, text in seen.items() if right in text or wrong in text)
        return tally("wrong broker password, then the right one", events,
                     received_events(subscriber), runs=2, seconds=time.monotonic() - start,
                     root=root, exit_codes=runs, secrets_found_in=leaked,
                     places_searched=sorted(seen),
                     credential_errors_logged=seen["log"].count("check the password"))


def _while_running(process: subprocess.Popen[bytes], metrics_port: int) -> dict[str, str]:
    """What an operator can read of a running daemon: its command line and environment
    (``/proc``), its metrics page (fetched once it answers)."""
    seen: dict[str, str] = {}
    proc = Path(f"/proc/{process.pid}")
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            seen["argv"] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            seen["environment"] = (proc / "environ").read_bytes().replace(b"\0", b"\n").decode()
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=1) as answer:
                seen["metrics"] = answer.read().decode()
            return seen
        except (OSError, ValueError):
            time.sleep(0.05)
    return seen


def write_results(rows: list[Tally], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([row.row() for row in rows], indent=2) + "\n")
