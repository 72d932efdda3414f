"""The gateway's on-disk state: the store-and-forward queue, sequence numbers, command log.

Every message the gateway sends with QoS 1 is first appended to the ``outbox`` table of one
SQLite file, in the same transaction that advances the device's sequence number; the broker
link publishes rows in id order and deletes each one when the broker acknowledges it (PUBACK).
So a message survives a broker outage and a gateway restart, a sequence number is never
reused, and a device timestamp is written once, when the poll happened, and never again.

The queue is bounded: past ``max_messages`` the oldest rows are deleted and counted as
dropped (the count survives restarts too). A row dropped while the broker had it in flight and
acknowledged afterwards was delivered after all: the acknowledgement takes it off the count
again, so ``dropped`` is exact. Each drop episode (from the first drop until the queue is back
under its bound) is logged once when it starts and once when it ends, with the count and the
oldest and newest queueing time dropped. SQLite runs in WAL mode with ``synchronous=NORMAL``:
a committed row survives a crash of the gateway process; only a power cut may lose the last
transactions.

A buffer file SQLite cannot read is not fatal: it is named, moved aside (never deleted) and a
fresh one started (``BufferRecovery``), so the gateway keeps polling and reporting.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vigil.metrics import BUFFER_DROPPED

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL DEFAULT 0,
    queued  INTEGER  -- ms since the epoch (NULL in files from before it was kept)
);
CREATE TABLE IF NOT EXISTS sequences (
    device   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- the counter 'epoch': the buffer generation this file belongs to (see Outbox.epoch)
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
class BufferRecovery:
    """A buffer file that could not be opened, and where it was moved."""

    path: Path
    problem: str
    moved_to: Path


@dataclass(slots=True)
class DropEpisode:
    """Messages dropped at the bound since the queue last fitted under it."""

    count: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None


def _time(ms: int | None) -> str:
    if ms is None:
        return "an unknown time"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def open_buffer(path: Path) -> tuple[sqlite3.Connection, BufferRecovery | None]:
    """Open (or create) the buffer at ``path``; a file SQLite cannot read is moved aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path), None
    except sqlite3.DatabaseError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    moved_to = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{moved_to}{suffix}"))
    log.error(
        "buffer %s cannot be read (%s): moved it to %s and started an empty buffer; the "
        "messages it held were not sent (recover them from the moved file)",
        path,
        problem,
        moved_to,
    )
    return _connect(path), BufferRecovery(path, problem, moved_to)


def check_buffer(path: Path) -> str:
    """What the buffer at ``path`` holds, read-only (``vigil gateway --check``); raises
    sqlite3.DatabaseError naming the problem when SQLite cannot read it."""
    if not path.exists():
        return f"buffer {path}: none yet (created at start)"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problem = db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {problem}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        queued = (
            db.execute("SELECT count(*) FROM outbox").fetchone()[0] if "outbox" in tables else 0
        )
    finally:
        db.close()
    return f"buffer {path}: {queued} messages queued"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # a damaged page can hide until it is read: check the structure at start
        problem = db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {problem}")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        if "queued" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN queued INTEGER")
    except BaseException:
        db.close()
        raise
    return db


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

    def __init__(
        self, path: Path, *, max_messages: int, now_ms: Callable[[], int] | None = None
    ) -> None:
        self.path = path
        self.max_messages = max_messages
        existed = path.exists() and path.stat().st_size > 0
        self._db, self.recovery = open_buffer(path)
        self.epoch, self.lost = self._take_epoch(existed=existed)
        # when a message was queued (the gateway's clock), for the drop episodes' log lines
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.episode: DropEpisode | None = None
        self._next_seq: dict[str, int] = dict(
            self._db.execute("SELECT device, next_seq FROM sequences").fetchall()
        )
        self.depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self.dropped: int = self._counter("dropped")
        self.appended = 0
        self.changed = asyncio.Event()

    def _take_epoch(self, *, existed: bool) -> tuple[int, str | None]:
        """The buffer generation, kept in a file beside the buffer as well as in it.

        A buffer lost while the gateway was stopped (deleted, truncated, corrupt) takes its
        sequence numbers with it; the new generation keeps (device, epoch, seq) unique. Returns
        the epoch and, when the buffer was lost, why (the gateway reports ``buffer_lost``).
        """
        marker = Path(f"{self.path}.epoch")
        remembered = int(marker.read_text().strip() or 0) if marker.exists() else 0
        inside = self._counter("epoch")
        lost: str | None = None
        if self.recovery is not None:
            lost = f"buffer unreadable ({self.recovery.problem}), moved to {self.recovery.moved_to}"
        elif remembered and not existed:
            lost = "buffer missing or empty"
        elif remembered and inside and inside != remembered:
            lost = f"buffer of epoch {inside} where epoch {remembered} was expected"
        if lost is not None or not (inside or remembered):
            epoch = max(inside, remembered) + 1
        else:
            epoch = inside or remembered  # an older buffer without its epoch: adopt the file's
        if lost is not None:
            log.error(
                "buffer %s lost: %s; what it held is gone, sequence numbers start again in "
                "epoch %d",
                self.path,
                lost,
                epoch,
            )
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('epoch', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (epoch,),
        )
        marker.write_text(f"{epoch}\n")
        return epoch, lost

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
            queued = self._now_ms()
            db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, queued) VALUES (?, ?, ?, ?, ?)",
                [(m.topic, m.payload, m.qos, int(m.retain), queued) for m in messages],
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
                oldest, newest, deleted = db.execute(
                    "SELECT min(queued), max(queued), count(*) FROM "
                    "(SELECT queued FROM outbox ORDER BY id LIMIT ?)",
                    (overflow,),
                ).fetchone()
                db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                    (overflow,),
                )
                self.depth -= deleted
                self.dropped += deleted
                self._note_drops(deleted, oldest, newest)
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
        self._end_episode_if_under_bound()
        self.changed.set()

    def _note_drops(self, count: int, oldest: int | None, newest: int | None) -> None:
        BUFFER_DROPPED.inc(count)
        episode = self.episode
        if episode is None:
            episode = self.episode = DropEpisode()
            log.warning(
                "buffer %s is full (%d messages): dropping the oldest messages until the "
                "broker takes them again (docs/gateway.md, sizing the buffer)",
                self.path,
                self.max_messages,
            )
        episode.count += count
        if oldest is not None:
            episode.oldest_ms = oldest if episode.oldest_ms is None else episode.oldest_ms
            episode.newest_ms = newest

    def _end_episode_if_under_bound(self) -> None:
        episode = self.episode
        if episode is None or self.depth >= self.max_messages:
            return
        self.episode = None
        log.warning(
            "buffer %s fits again: %d messages dropped, queued between %s and %s",
            self.path,
            episode.count,
            _time(episode.oldest_ms),
            _time(episode.newest_ms),
        )

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
        db = self._db
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM outbox WHERE id = ?", batch)
        removed = db.total_changes - before
        delivered_after_drop = len(batch) - removed
        if delivered_after_drop:
            # dropped at the bound while in flight, then acknowledged: delivered, not lost
            self.dropped -= delivered_after_drop
            if self.episode is not None:
                self.episode.count -= delivered_after_drop
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (self.dropped,),
            )
        db.execute("COMMIT")
        self.depth -= removed
        self._end_episode_if_under_bound()
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
