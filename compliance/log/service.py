"""Reads and writes of the compliance log (rule A1).

Call ``append`` inside the transaction that writes the fact itself, so that the
fact and its log entry commit together or not at all. Writers are serialised by a
transaction-scoped advisory lock: the lock is held until the caller's transaction ends, so two
writers can never both extend the same head (and the table's UNIQUE ``prev_hash`` and insert
trigger refuse it if anyone tries without the lock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg.types.json import Jsonb

from compliance.log import merkle
from compliance.log.models import (
    GENESIS_HASH,
    Checkpoint,
    Entry,
    LogEntry,
    Problem,
    canonical_body,
    entry_bytes,
    entry_hash,
)
from vigil.db.rows import columns, first_value
from vigil.metrics import DECISIONS

# pg_advisory_xact_lock key of the log's single writer slot ("VCLG").
LOG_LOCK_KEY = 0x5643_4C47

# the head the insert trigger keeps (compliance 0210): one row, whatever the log's length
_HEAD = "SELECT seq, hash FROM compliance_log_head"
# The rule behind a kind of entry, for the decisions metric when the body names none.
RULE_OF_KIND = {
    "maintenance.record": "M3",
    "maintenance.verdict": "M3",
    "maintenance.signoff": "M4",
    "escalation": "M5",  # overdue → alarm (M5); the lockout steps count as M6
    "drill": "M8",
    "unqualified_technician": "M10",
    "rescue": "R6",
    "rescue_breach": "R2",
    "rescue_accept_timeout": "R4",
    "inspection": "L4",
    "alarm": "A1",
}
_INSERT = (
    "INSERT INTO compliance_log "
    "(seq, kind, subject_type, subject_id, body, actor, at, prev_hash, hash) "
    "VALUES (%(seq)s, %(kind)s, %(subject_type)s, %(subject_id)s, %(body)s, %(actor)s, %(at)s, "
    "%(prev_hash)s, %(hash)s)"
)
_FIELDS = ("seq", "kind", "subject_type", "subject_id", "body", "actor", "at", "prev_hash", "hash")
# a batch goes in by COPY, one statement: the link check runs once over it (compliance 0213),
# and COPY sends each row as it is (an INSERT of arrays built and parsed every value twice)
_COPY = f"COPY compliance_log ({', '.join(_FIELDS)}) FROM STDIN"
# the body is stored as the canonical text the hash covers (what a scan checks); an entry
# carries it as an object
_STORED_COLUMNS = columns(Entry)
_ENTRY_COLUMNS = columns(Entry, casts={"body": "jsonb"})


def _row(
    *,
    head: dict[str, Any] | None,
    kind: str,
    subject_type: str,
    subject_id: str | int,
    body: dict[str, Any],
    actor: str,
    at: datetime,
    body_text: str | None = None,
) -> dict[str, Any]:
    seq = (head["seq"] if head else 0) + 1
    prev = head["hash"] if head else GENESIS_HASH
    if body_text is None:
        body_text = canonical_body(body)
    subject = str(subject_id)
    digest = entry_hash(
        entry_bytes(
            seq=seq,
            prev=prev,
            kind=kind,
            subject_type=subject_type,
            subject_id=subject,
            body_text=body_text,
            actor=actor,
            at=at,
            body_is_canonical=True,
        )
    )
    return {
        "seq": seq,
        "kind": kind,
        "subject_type": subject_type,
        "subject_id": subject,
        "body": body_text,
        "actor": actor,
        "at": at,
        "prev_hash": prev,
        "hash": digest,
    }


def _count_decision(kind: str, body: dict[str, Any]) -> None:
    rule = body.get("rule") or RULE_OF_KIND.get(kind) or RULE_OF_KIND.get(kind.split(".", 1)[0])
    if kind == "escalation.transition" and str(body.get("to", "")).startswith("lockout"):
        rule = "M6"
    elif kind == "escalation.transition" and body.get("to") == "locked_out":
        rule = "M6"
    DECISIONS.labels(rule=str(rule or "-"), kind=kind).inc()


def append(
    conn: psycopg.Connection,
    *,
    kind: str,
    subject_type: str,
    subject_id: str | int,
    body: dict[str, Any],
    actor: str,
    at: datetime,
) -> Entry:
    """Append one entry inside the caller's transaction; the lock lasts until it commits."""
    # The body is serialised before taking the lock, so a bad body never holds up other writers.
    text = canonical_body(body)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK_KEY,))
        head = cur.execute(_HEAD).fetchone()
        row = _row(
            head=head,
            kind=kind,
            subject_type=subject_type,
            subject_id=subject_id,
            body=body,
            body_text=text,
            actor=actor,
            at=at,
        )
        cur.execute(_INSERT, row)
    _count_decision(kind, body)
    return Entry(**{**row, "body": body})


def append_many(conn: psycopg.Connection, *, items: list[dict[str, Any]]) -> tuple[int, str] | None:
    """Append several entries (each a dict of ``append``'s keyword arguments) in one go; the
    log's new head (entry count and hash), None when there was nothing to append."""
    if not items:
        return None
    # serialised before taking the lock: a bad body never holds up other writers
    texts = [canonical_body(item["body"]) for item in items]
    rows: list[dict[str, Any]] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK_KEY,))
        last = cur.execute(_HEAD).fetchone()
        for item, text in zip(items, texts, strict=True):
            row = _row(head=last, body_text=text, **item)
            rows.append(row)
            last = row
        insert_rows(conn, rows=rows)
    for item in items:
        _count_decision(item["kind"], item["body"])
    # the new head: building an Entry per row (validated again) cost a sweep 60 us an entry
    return rows[-1]["seq"], rows[-1]["hash"]


def insert_rows(conn: psycopg.Connection, *, rows: Sequence[dict[str, Any]]) -> None:
    """Store finished rows (with their seq and hashes) in one COPY statement, in order."""
    with conn.cursor() as cur, cur.copy(_COPY) as copy:
        for row in rows:
            copy.write_row([row[name] for name in _FIELDS])


def head(conn: psycopg.Connection) -> tuple[int, str]:
    """Entry count and head hash of the log as this transaction sees it."""
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(_HEAD).fetchone()
    return (found["seq"], found["hash"]) if found else (0, GENESIS_HASH)


def entries(
    conn: psycopg.Connection,
    *,
    subject_type: str | None = None,
    subject_id: str | int | None = None,
    kind: str | None = None,
    after_seq: int = 0,
    limit: int = 1000,
) -> list[Entry]:
    """Entries in order, optionally for one subject or one kind."""
    where = ["seq > %(after)s"]
    params: dict[str, Any] = {"after": after_seq, "limit": limit}
    if subject_type is not None:
        where.append("subject_type = %(subject_type)s")
        params["subject_type"] = subject_type
    if subject_id is not None:
        where.append("subject_id = %(subject_id)s")
        params["subject_id"] = str(subject_id)
    if kind is not None:
        where.append("kind = %(kind)s")
        params["kind"] = kind
    query = (
        f"SELECT {_ENTRY_COLUMNS} FROM compliance_log WHERE {' AND '.join(where)} "
        "ORDER BY seq LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        return cur.execute(query, params).fetchall()


def scan(conn: psycopg.Connection, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Every stored row in sequence order, streamed through a server-side cursor."""
    with conn.transaction(), conn.cursor("compliance_log_scan", row_factory=dict_row) as cur:
        cur.itersize = batch
        cur.execute(f"SELECT {_STORED_COLUMNS} FROM compliance_log ORDER BY seq")
        yield from cur


def check_chain(
    rows: Iterator[dict[str, Any]],
    *,
    after_seq: int = 0,
    prev: str = GENESIS_HASH,
    leaves: list[bytes] | None = None,
) -> tuple[int, str, Problem | None]:
    """Walk rows in order (from ``after_seq``, whose hash is ``prev``); returns (entries
    verified, their head hash, first problem). ``leaves`` collects each verified entry's Merkle
    leaf hash."""
    expected_seq = after_seq + 1
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            if seq > expected_seq:
                reason = f"missing (the next stored entry is {seq})"
            else:
                reason = f"out of order (entry {seq} stored after entry {expected_seq - 1})"
            return expected_seq - 1, prev, Problem(expected_seq, reason)
        if row["prev_hash"] != prev:
            return seq - 1, prev, Problem(seq, "previous-hash link broken")
        try:
            data = entry_bytes(
                seq=seq,
                prev=row["prev_hash"],
                kind=row["kind"],
                subject_type=row["subject_type"],
                subject_id=row["subject_id"],
                body_text=row["body"],
                actor=row["actor"],
                at=row["at"],
            )
        except ValueError as exc:
            return seq - 1, prev, Problem(seq, f"unreadable ({exc})")
        if entry_hash(data) != row["hash"]:
            return seq - 1, prev, Problem(seq, "content does not match its hash")
        if leaves is not None:
            leaves.append(merkle.leaf_hash(data))
        prev = row["hash"]
        expected_seq += 1
    return expected_seq - 1, prev, None


_CHECKPOINT_COLUMNS = columns(Checkpoint)


def insert_checkpoint(
    conn: psycopg.Connection,
    *,
    entry_count: int,
    head_hash: str,
    signed_at: datetime,
    public_key: str,
    signature: str,
    root_hash: str | None = None,
    frontier: list[str] | None = None,
) -> Checkpoint:
    """Store a signed checkpoint: a signed tree head when it has a root (version 2)."""
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        row = cur.execute(
            "INSERT INTO compliance_checkpoints (entry_count, head_hash, signed_at, public_key, "
            "signature, version, root_hash, frontier) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CHECKPOINT_COLUMNS}",
            (
                entry_count,
                head_hash,
                signed_at,
                public_key,
                signature,
                1 if root_hash is None else 2,
                root_hash,
                None if frontier is None else Jsonb(frontier),
            ),
        ).fetchone()
    assert row is not None
    return row


def checkpoints(conn: psycopg.Connection) -> list[Checkpoint]:
    """Every stored checkpoint, oldest first."""
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        return cur.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM compliance_checkpoints ORDER BY id"
        ).fetchall()


def latest_checkpoint(conn: psycopg.Connection) -> Checkpoint | None:
    """The most recent checkpoint, if any."""
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        return cur.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM compliance_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()


def leaf_count(conn: psycopg.Connection) -> int:
    """How many entries have their Merkle leaf recorded (always a prefix of the log)."""
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM compliance_log_leaves").fetchone()
    return int(first_value(row))


def rows_after(
    conn: psycopg.Connection, *, after_seq: int, upto: int, batch: int = 5000
) -> Iterator[dict[str, Any]]:
    """Stored rows after ``after_seq`` up to ``upto``, in order, streamed."""
    with conn.transaction(), conn.cursor("compliance_log_tail", row_factory=dict_row) as cur:
        cur.itersize = batch
        cur.execute(
            f"SELECT {_STORED_COLUMNS} FROM compliance_log WHERE seq > %s AND seq <= %s "
            "ORDER BY seq",
            (after_seq, upto),
        )
        yield from cur


def insert_leaves(conn: psycopg.Connection, *, first_seq: int, leaves: list[bytes]) -> None:
    """Record the leaf hashes of consecutive entries from ``first_seq``."""
    with conn.cursor().copy("COPY compliance_log_leaves (seq, leaf_hash) FROM STDIN") as copy:
        for offset, leaf in enumerate(leaves):
            copy.write_row((first_seq + offset, leaf.hex()))


def stored_leaves(conn: psycopg.Connection, *, upto: int, after: int = 0) -> list[bytes]:
    """The recorded leaf hashes of entries ``after``+1..``upto``, in order."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT leaf_hash FROM compliance_log_leaves WHERE seq > %s AND seq <= %s ORDER BY seq",
            (after, upto),
        )
        return [bytes.fromhex(row[0]) for row in cur]


def beyond_checkpoint(subject_type: str, subject_id: sql.Composable) -> sql.Composable:
    """SQL that holds while a subject has log entries no signed checkpoint covers yet (rule
    A3: a record is purged only once the checkpoint regulators hold covers its history)."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM compliance_log l WHERE l.subject_type = {t} "
        "AND l.subject_id = ({i})::text AND l.seq > (SELECT coalesce(max(entry_count), 0) "
        "FROM compliance_checkpoints))"
    ).format(t=sql.Literal(subject_type), i=subject_id)


def allow_purge(conn: psycopg.Connection) -> None:
    """Let this transaction delete kept rows whose retention ran out (rule A3)."""
    conn.execute("SELECT set_config('vigil.retention_purge', 'on', true)")


def hashes_at(conn: psycopg.Connection, *, seqs: list[int]) -> dict[int, str]:
    """Stored hash of each given entry number."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT seq, hash FROM compliance_log WHERE seq = ANY(%s)", (seqs,)
        ).fetchall()
    return {row["seq"]: row["hash"] for row in rows}


CHECKPOINT_LOCK_KEY = 0x5643_4B50  # one checkpoint writer at a time


def lock_checkpoints(conn: psycopg.Connection) -> None:
    """Wait for the checkpoint writers' transaction lock."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHECKPOINT_LOCK_KEY,))


# -- scoped reads for the audit API (rule A2) ------------------------------------------------

# subject types whose rows carry a device_id column (checked at query time: domains land apart)
SUBJECT_TABLES: dict[str, str] = {
    "maintenance_record": "maintenance_records",
    "rescue_incident": "rescue_incidents",
    "alarm": "alarms",
}


_PRESENT_TABLES = """SELECT table_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND column_name = 'device_id' AND table_name = ANY(%s)"""


def _tables_among(present: set[str]) -> dict[str, str]:
    return {subject: table for subject, table in SUBJECT_TABLES.items() if table in present}


async def subject_tables(conn: psycopg.AsyncConnection) -> dict[str, str]:
    """Those of SUBJECT_TABLES that exist in this database and have a device_id column."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_PRESENT_TABLES, (list(SUBJECT_TABLES.values()),))
        return _tables_among({row[0] for row in await cur.fetchall()})


def entry_device(tables: dict[str, str]) -> sql.Composable:
    """SQL expression: the device an entry of ``compliance_log l`` is about, or NULL."""
    parts: list[sql.Composable] = [
        sql.SQL("CASE WHEN l.subject_type = 'device' THEN l.subject_id END"),
        sql.SQL("l.body::jsonb ->> 'device_id'"),
        sql.SQL("l.body::jsonb ->> 'device'"),
    ]
    for subject, table in tables.items():
        parts.append(
            sql.SQL(
                "CASE WHEN l.subject_type = {s} THEN (SELECT x.device_id FROM {t} x"
                " WHERE x.id::text = l.subject_id) END"
            ).format(s=sql.Literal(subject), t=sql.Identifier(table))
        )
    return sql.SQL("COALESCE({})").format(sql.SQL(", ").join(parts))


def _filters(
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    device: sql.Composable,
    kind: str | None,
    subject_type: str | None,
    subject_id: str | None,
    device_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[sql.Composable, dict[str, Any]]:
    where: list[sql.Composable] = [sql.SQL("l.seq > %(after)s")]
    params: dict[str, Any] = dict(device_params)
    if devices is not None:
        # rule A2: only entries about assets in scope
        where.append(
            sql.SQL("EXISTS (SELECT 1 FROM devices d WHERE d.id = {dev} AND ({scope}))").format(
                dev=device, scope=devices
            )
        )
    for column, value in (
        ("kind", kind),
        ("subject_type", subject_type),
        ("subject_id", subject_id),
    ):
        if value is not None:
            where.append(sql.SQL("l.{} = %({})s").format(sql.Identifier(column), sql.SQL(column)))
            params[column] = value
    if device_id is not None:
        where.append(sql.SQL("{} = %(device_id)s").format(device))
        params["device_id"] = device_id
    if since is not None:
        where.append(sql.SQL("l.at >= %(since)s"))
        params["since"] = since
    if until is not None:
        where.append(sql.SQL("l.at < %(until)s"))
        params["until"] = until
    return sql.SQL(" AND ").join(where), params


async def _scoped_select(
    conn: psycopg.AsyncConnection,
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    filters: dict[str, Any],
) -> tuple[sql.Composed, dict[str, Any]]:
    """``SELECT`` of the entries in scope and matching ``filters``, in chain order (no limit)."""
    return _scoped_query(
        await subject_tables(conn),
        devices=devices,
        device_params=device_params,
        filters=filters,
    )


def _scoped_query(
    tables: dict[str, str],
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    filters: dict[str, Any],
) -> tuple[sql.Composed, dict[str, Any]]:
    device = entry_device(tables)
    where, params = _filters(
        devices=devices,
        device_params=device_params,
        device=device,
        kind=filters.get("kind"),
        subject_type=filters.get("subject_type"),
        subject_id=filters.get("subject_id"),
        device_id=filters.get("device_id"),
        since=filters.get("since"),
        until=filters.get("until"),
    )
    query = sql.SQL(
        """SELECT l.seq, l.at, l.kind, l.subject_type, l.subject_id, {dev} AS device_id,
                  l.actor, l.body, l.prev_hash, l.hash
           FROM compliance_log l WHERE {where} ORDER BY l.seq"""
    ).format(dev=device, where=where)
    return query, params


async def list_entries(
    conn: psycopg.AsyncConnection,
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    after_seq: int,
    limit: int,
    **filters: Any,
) -> list[LogEntry]:
    """Entries about devices in ``devices`` (a condition over alias ``d``; None: every entry,
    about an asset or not), in chain order, after ``after_seq``; ``filters``: kind,
    subject_type, subject_id, device_id, since, until."""
    query, params = await _scoped_select(
        conn, devices=devices, device_params=device_params, filters=filters
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query + sql.SQL(" LIMIT %(limit)s"), {**params, "after": after_seq, "limit": limit}
        )
        return [LogEntry.model_validate(row) for row in await cur.fetchall()]


async def stream_entries(
    conn: psycopg.AsyncConnection,
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    batch: int = 2000,
    **filters: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Every entry in scope, in chain order, through a server-side cursor (body as stored)."""
    query, params = await _scoped_select(
        conn, devices=devices, device_params=device_params, filters=filters
    )
    async with conn.transaction():
        async with conn.cursor("audit_export", row_factory=dict_row) as cur:
            cur.itersize = batch
            await cur.execute(query, {**params, "after": 0})
            async for row in cur:
                yield row


def scoped_rows(
    conn: psycopg.Connection,
    *,
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    upto: int,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Stored rows of the entries in scope up to entry ``upto``, in chain order (body as the
    canonical text its hash covers), for an export."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_PRESENT_TABLES, (list(SUBJECT_TABLES.values()),))
        tables = _tables_among({row[0] for row in cur.fetchall()})
    query, params = _scoped_query(
        tables, devices=devices, device_params=device_params, filters=filters
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT * FROM ({}) s WHERE s.seq <= %(upto)s ORDER BY s.seq").format(query),
            {**params, "after": 0, "upto": upto},
        )
        return cur.fetchall()
