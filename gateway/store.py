"""The gateway's on-disk state: the store-and-forward queue, sequence numbers, command log.

Every message the gateway sends with QoS 1 is first appended to the ``outbox`` table of one
SQLite file, in the same transaction that advances the device's sequence number; the broker
link publishes rows in id order and deletes each one when the broker acknowledges it (PUBACK).
So a message survives a broker outage and a gateway restart, a sequence number is never
reused, and a device timestamp is written once, when the poll happened, and never again.

The queue is bounded: past ``max_messages`` the oldest rows are deleted and counted as
dropped (the count survives restarts too). SQLite runs in WAL mode with ``synchronous=NORMAL``:
a committed row survives a crash of the gateway process; only a power cut may lose the last
transactions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sequences (
    device   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id       TEXT PRIMARY KEY,
    device   TEXT NOT NULL,
    action   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    received INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_pending ON commands (device) WHERE outcome = 'pending_safety';
"""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready for the wire; ``seq_device`` names the device whose counter it used."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    seq_device: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Queued:
    """A row of the outbox."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """What the gateway did with a command id (so a redelivered command is not run twice)."""

    id: str
    device: str
    action: str
    outcome: str
    detail: str
    received: int


class Outbox:
    """The SQLite queue and counters; used from one event loop thread."""

    def __init__(self, path: Path, *, max_messages: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._next_seq: dict[str, int] = dict(
            self._db.execute("SELECT device, next_seq FROM sequences").fetchall()
        )
        self.depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self.dropped: int = self._counter("dropped")
        self.appended = 0
        self.changed = asyncio.Event()

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the database (everything is already committed)."""
        self._db.close()

    # -- sequence numbers --------------------------------------------------------------------------

    def take_seq(self, device: str) -> int:
        """The next sequence number of ``device``; persisted when a message using it is appended."""
        seq = self._next_seq.get(device, 0)
        self._next_seq[device] = seq + 1
        return seq

    def next_seq(self, device: str) -> int:
        """The number the device's next message will carry."""
        return self._next_seq.get(device, 0)

    # -- queue -------------------------------------------------------------------------------------

    def append(self, messages: Sequence[Outgoing]) -> None:
        """Queue ``messages`` in order, in one transaction with their sequence counters."""
        if not messages:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                [(m.topic, m.payload, m.qos, int(m.retain)) for m in messages],
            )
            counters = {m.seq_device: m.seq for m in messages if m.seq_device and m.seq is not None}
            db.executemany(
                "INSERT INTO sequences (device, next_seq) VALUES (?, ?) ON CONFLICT (device) "
                "DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                [(device, seq + 1) for device, seq in counters.items() if seq is not None],
            )
            self.depth += len(messages)
            overflow = self.depth - self.max_messages
            if overflow > 0:
                # Only past the bound, and oldest first; every drop is counted (and persisted).
                deleted = db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                    (overflow,),
                ).rowcount
                self.depth -= deleted
                self.dropped += deleted
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (self.dropped,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self.depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            raise
        self.appended += len(messages)
        self.changed.set()

    def peek(self, *, after: int, limit: int) -> list[Queued]:
        """Up to ``limit`` queued messages with an id above ``after``, oldest first."""
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [Queued(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages; returns how many were still queued."""
        batch = [(i,) for i in ids]
        if not batch:
            return 0
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM outbox WHERE id = ?", batch)
        self._db.execute("COMMIT")
        removed = self._db.total_changes - before
        self.depth -= removed
        return removed

    # -- command log -------------------------------------------------------------------------------

    def command(self, command_id: str) -> CommandRecord | None:
        """What was done with ``command_id``, if it was seen before."""
        row = self._db.execute(
            "SELECT id, device, action, outcome, detail, received FROM commands WHERE id = ?",
            (command_id,),
        ).fetchone()
        return CommandRecord(*row) if row else None

    def record_command(self, record: CommandRecord) -> None:
        """Remember the outcome of a command (replacing an earlier outcome of the same id)."""
        self._db.execute(
            "INSERT INTO commands (id, device, action, outcome, detail, received) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "outcome = excluded.outcome, detail = excluded.detail",
            (
                record.id,
                record.device,
                record.action,
                record.outcome,
                record.detail,
                record.received,
            ),
        )

    def pending_commands(self, device: str) -> list[CommandRecord]:
        """Commands of ``device`` still waiting for the controller (pending_safety)."""
        rows = self._db.execute(
            "SELECT id, device, action, outcome, detail, received FROM commands "
            "WHERE device = ? AND outcome = 'pending_safety' ORDER BY received, id",
            (device,),
        ).fetchall()
        return [CommandRecord(*row) for row in rows]

    def forget_commands(self, *, before_ms: int) -> None:
        """Drop finished command records received before ``before_ms``."""
        self._db.execute(
            "DELETE FROM commands WHERE received < ? AND outcome != 'pending_safety'", (before_ms,)
        )
