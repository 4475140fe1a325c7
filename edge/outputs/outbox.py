"""The durable outbox: every alarm event is on disk before it is sent, and leaves only when
the broker has acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: ``put`` returns after the row is committed to
disk, so a daemon killed with SIGKILL (or a power cut) right after an alarm still sends it
when it starts again. The MQTT sender reads rows in ``seq`` order and deletes a row on the
broker's PUBACK (``remove``). Safe to share between threads (one connection behind a lock).

Bounded: ``max_rows`` rows and ``max_bytes`` of payload. When a new event does not fit, the
OLDEST rows are dropped to make room, with a WARNING naming how many and the counter
``dropped`` (exposed for the metrics). Why oldest: an outbox that is full means the broker
has been unreachable for a long time (10 000 alarms); the newest events describe what is
happening now, the retained state topic is republished on reconnect anyway, and every event,
dropped or not, is still in the local journal (``edge.outputs.journal``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import BadInput, RuntimeFailure

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float  # Unix time the row was written


class Outbox:
    """A bounded, durable FIFO of MQTT messages in ``path`` (an SQLite file)."""

    def __init__(self, path: Path, *, max_rows: int = DEFAULT_MAX_ROWS,
                 max_bytes: int = DEFAULT_MAX_BYTES, memory_if_unusable: bool = False) -> None:
        """``memory_if_unusable``: when ``path`` cannot be opened (a full or read-only state
        disk at start), keep the messages in an in-memory database instead of refusing, and
        say why in ``unusable`` (a daemon that monitors without durability beats one that does
        not start); otherwise that is a ``BadInput``."""
        if max_rows < 1 or max_bytes < 1:
            raise BadInput(f"outbox bounds max_rows={max_rows}, max_bytes={max_bytes}: both "
                           "must be at least 1")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.dropped = 0  # rows dropped to make room, since this process opened the outbox
        self.unusable: str | None = None
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open(str(self.path))
        except (OSError, sqlite3.Error) as err:
            message = (f"cannot open the outbox {self.path}: {err}; free space on the state "
                       "disk or point the state directory at a writable folder")
            if not memory_if_unusable:
                raise BadInput(message) from err
            self.unusable = message
            self._db = self._open(":memory:")
        depth = self.depth()
        if depth:
            logger.info("outbox %s holds %d unsent message(s) from before; they go first",
                        self.path, depth)

    @staticmethod
    def _open(where: str) -> sqlite3.Connection:
        db = sqlite3.connect(where, check_same_thread=False,
                             isolation_level=None)  # autocommit; BEGIN explicitly
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Store one message durably; return its sequence number. Drops the oldest if full."""
        size = len(payload)
        if size > self.max_bytes:
            raise RuntimeFailure(f"a message of {size} bytes for {topic} is larger than the "
                                 f"outbox's max_bytes={self.max_bytes}")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                dropped = self._make_room(size)
                cursor = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created) "
                    "VALUES (?, ?, ?, ?, ?)", (topic, payload, qos, int(retain), time.time()))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise RuntimeFailure(f"cannot write to the outbox {self.path}: {err}") from err
            seq = int(cursor.lastrowid or 0)
        if dropped:
            self.dropped += dropped
            logger.warning("outbox %s is full (max_rows=%d, max_bytes=%d): dropped the %d "
                           "oldest unsent message(s) (%d dropped so far); they remain in the "
                           "journal", self.path, self.max_rows, self.max_bytes, dropped,
                           self.dropped)
        return seq

    def _make_room(self, size: int) -> int:
        rows, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        dropped = 0
        while rows and (rows + 1 > self.max_rows or total + size > self.max_bytes):
            seq, length = self._db.execute(
                "SELECT seq, LENGTH(payload) FROM outbox ORDER BY seq LIMIT 1").fetchone()
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            rows -= 1
            total -= length
            dropped += 1
        return dropped

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def peek(self, after_seq: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Up to ``limit`` messages with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, created FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [OutboxItem(seq=row[0], topic=row[1], payload=bytes(row[2]), qos=row[3],
                           retain=bool(row[4]), created=row[5]) for row in rows]

    def remove(self, seq: int) -> None:
        """Delete a message the broker acknowledged (a no-op if it is already gone)."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            except sqlite3.Error as err:
                # The message stays and is sent again: a duplicate, which subscribers drop.
                logger.error("cannot remove message %d from the outbox %s: %s", seq,
                             self.path, err)

    def depth(self) -> int:
        """Messages waiting for an acknowledgement (for the outbox-depth metric)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def size_bytes(self) -> int:
        """Payload bytes waiting."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
