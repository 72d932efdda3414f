"""Database reads and writes of ingest: registry look-ups, COPY, upserts, dead letters, storage.

Every write of a batch runs on one connection inside the caller's transaction; notifications
are queued on the same connection so PostgreSQL delivers them exactly when it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg.rows import tuple_row

from ingest.binary import COLUMNS
from ingest.models import DeadLetter, DeviceInfo
from vigil import notify
from vigil.catalog import DeviceKind
from vigil.db import has_timescaledb

STAGE_TABLE = "ingest_telemetry_stage"
# bigint milliseconds since the epoch as timestamptz, exactly (no float rounding).
_MS = "(timestamptz 'epoch' + {} * interval '1 millisecond')"


def connect_writer(url: str) -> psycopg.Connection:
    """A transactional connection with the per-session staging table ingest COPYs through."""
    conn = psycopg.connect(url, row_factory=tuple_row, connect_timeout=5)
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} "
        '(device_ref integer, set_id integer, ts timestamptz, "values" float8[], bad int2[]) '
        "ON COMMIT DELETE ROWS"
    )
    conn.commit()
    return conn


# -- registry ------------------------------------------------------------------------------------


def load_devices(conn: psycopg.Connection, *, ids: Sequence[str] | None = None) -> list[DeviceInfo]:
    """Registered devices (all, or those among ``ids``)."""
    query = "SELECT id, kind, gateway_id, decommissioned_at IS NOT NULL, ref FROM devices"
    rows = (
        conn.execute(query).fetchall()
        if ids is None
        else conn.execute(query + " WHERE id = ANY(%s)", (list(ids),)).fetchall()
    )
    return [DeviceInfo(r[0], DeviceKind(r[1]), r[2], bool(r[3]), r[4]) for r in rows]


def load_gateways(conn: psycopg.Connection, *, ids: Sequence[str] | None = None) -> set[str]:
    """Registered gateway ids (all, or those among ``ids``)."""
    if ids is None:
        rows = conn.execute("SELECT id FROM gateways").fetchall()
    else:
        rows = conn.execute("SELECT id FROM gateways WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {r[0] for r in rows}


def issued_commands(conn: psycopg.Connection, *, ids: Sequence[str]) -> dict[str, str]:
    """Device of each command among ``ids`` that exists."""
    rows = conn.execute(
        "SELECT id, device_id FROM commands WHERE id = ANY(%s)", (list(ids),)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


# -- telemetry -----------------------------------------------------------------------------------


def ensure_partitions(conn: psycopg.Connection, *, first_day: date, last_day: date) -> int:
    """Create the missing daily partitions in [first_day, last_day]; commits on its own."""
    row = conn.execute(
        "SELECT ensure_telemetry_partitions(%s, %s)", (first_day, last_day)
    ).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def metric_sets(
    conn: psycopg.Connection, *, sets: Sequence[tuple[str, ...]]
) -> dict[tuple[str, ...], int]:
    """Id of each sorted metric list, creating the missing ones (in the caller's transaction)."""
    wanted = sorted(set(sets))
    if not wanted:
        return {}
    # One array literal per set (metric names need no quoting, vigil.wire.METRIC_PATTERN):
    # PostgreSQL has no arrays of arrays of unequal lengths.
    literals = ["{" + ",".join(metrics) + "}" for metrics in wanted]
    conn.execute(
        "INSERT INTO telemetry_metric_sets (metrics) SELECT m::text[] FROM unnest(%s::text[]) m "
        "ORDER BY 1 ON CONFLICT (metrics) DO NOTHING",
        (literals,),
    )
    rows = conn.execute(
        "SELECT s.metrics, s.id FROM telemetry_metric_sets s "
        "JOIN unnest(%s::text[]) m ON s.metrics = m::text[]",
        (literals,),
    ).fetchall()
    return {tuple(r[0]): r[1] for r in rows}


def copy_telemetry(conn: psycopg.Connection, *, data: bytes) -> None:
    """Binary COPY straight into telemetry_rows; raises UniqueViolation if a row is there."""
    with conn.cursor().copy(f"COPY telemetry_rows {COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(data)


def copy_telemetry_deduplicated(
    conn: psycopg.Connection, *, data: bytes, received_at: datetime
) -> int:
    """Binary COPY into the staging table, then merge point by point; returns points stored.

    A point whose (device, metric, ts) is stored already with another value keeps the stored
    value; the disagreement goes to ``telemetry_conflicts`` (merge_telemetry_stage, 0105).
    """
    with conn.cursor().copy(f"COPY {STAGE_TABLE} {COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(data)
    row = conn.execute("SELECT merge_telemetry_stage(%s)", (received_at,)).fetchone()
    conn.execute(f"TRUNCATE {STAGE_TABLE}")  # a repeat round reuses it in this transaction
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class StateRow:
    """The newest value of one metric of one device within a batch."""

    device_id: str
    metric: str
    ts: int
    value: float
    good: bool


def upsert_device_state(conn: psycopg.Connection, *, rows: Sequence[StateRow]) -> set[str]:
    """Move device_state forward (never back in time); returns the devices that changed."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: (r.device_id, r.metric))  # one lock order: no deadlock
    cur = conn.execute(
        "INSERT INTO device_state AS s (device_id, metric, value, ts, good, updated_at) "
        f"SELECT d, m, v, {_MS.format('t')}, g, now() "
        "FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[], %s::bool[]) "
        "AS u(d, m, t, v, g) "
        "ON CONFLICT (device_id, metric) DO UPDATE "
        "SET value = EXCLUDED.value, ts = EXCLUDED.ts, good = EXCLUDED.good, "
        "updated_at = EXCLUDED.updated_at WHERE s.ts < EXCLUDED.ts "
        "RETURNING device_id",
        (
            [r.device_id for r in ordered],
            [r.metric for r in ordered],
            [r.ts for r in ordered],
            [r.value for r in ordered],
            [r.good for r in ordered],
        ),
    )
    return {r[0] for r in cur.fetchall()}


def mark_rollup_hours(conn: psycopg.Connection, *, hours_ms: Iterable[int], now: datetime) -> None:
    """Record hours that got meter or light telemetry, for the hourly rollup refresh."""
    ordered = sorted(set(hours_ms))
    if not ordered:
        return
    # DO UPDATE (not DO NOTHING) locks the row until commit, so a concurrent refresh skips it.
    conn.execute(
        "INSERT INTO telemetry_hourly_pending (bucket, marked_at) "
        f"SELECT {_MS.format('h')}, %s FROM unnest(%s::bigint[]) AS u(h) "
        "ON CONFLICT (bucket) DO UPDATE SET marked_at = EXCLUDED.marked_at",
        (now, ordered),
    )


# -- events and command results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event to store."""

    device_id: str
    metric: str
    ts: int
    value: float | None
    previous: float | None
    seq: int


def insert_events(
    conn: psycopg.Connection, *, rows: Sequence[EventRow], received_at: datetime
) -> list[notify.EventNotice]:
    """Store events not stored before; returns a notice per newly stored event."""
    if not rows:
        return []
    ordered = sorted(rows, key=lambda r: (r.device_id, r.metric, r.ts))
    cur = conn.execute(
        "INSERT INTO events (device_id, metric, ts, value, previous, seq, received_at) "
        f"SELECT d, m, {_MS.format('t')}, v, p, q, %s "
        "FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[], %s::float8[], "
        "%s::bigint[]) AS u(d, m, t, v, p, q) "
        "ON CONFLICT (device_id, metric, ts) DO NOTHING "
        "RETURNING id, device_id, metric, (extract(epoch FROM ts) * 1000)::bigint, value, previous",
        (
            received_at,
            [r.device_id for r in ordered],
            [r.metric for r in ordered],
            [r.ts for r in ordered],
            [r.value for r in ordered],
            [r.previous for r in ordered],
            [r.seq for r in ordered],
        ),
    )
    return [notify.EventNotice(*row) for row in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class CommandResultRow:
    """One command result to store."""

    command_id: str
    device_id: str
    outcome: str
    ts: int
    detail: str


def insert_command_results(
    conn: psycopg.Connection, *, rows: Sequence[CommandResultRow], received_at: datetime
) -> list[notify.CommandNotice]:
    """Store command results not stored before; returns a notice per new one."""
    if not rows:
        return []
    ordered = sorted(rows, key=lambda r: (r.command_id, r.outcome, r.ts))
    devices = {r.command_id: r.device_id for r in ordered}
    cur = conn.execute(
        "INSERT INTO command_results (command_id, outcome, ts, detail, received_at) "
        f"SELECT c, o, {_MS.format('t')}, d, %s "
        "FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[]) AS u(c, o, t, d) "
        "ON CONFLICT (command_id, outcome, ts) DO NOTHING "
        "RETURNING command_id, outcome, (extract(epoch FROM ts) * 1000)::bigint",
        (
            received_at,
            [r.command_id for r in ordered],
            [r.outcome for r in ordered],
            [r.ts for r in ordered],
            [r.detail for r in ordered],
        ),
    )
    return [
        notify.CommandNotice(command_id=c, device=devices[c], outcome=o, ts=t)
        for c, o, t in cur.fetchall()
    ]


# -- gateways ------------------------------------------------------------------------------------


def upsert_gateway_state(
    conn: psycopg.Connection, *, gateway_id: str, state: str, ts: int, now: datetime
) -> None:
    """Record a gateway's status unless a newer one is stored."""
    conn.execute(
        "INSERT INTO gateway_status AS g (gateway_id, state, state_ts, updated_at) "
        f"VALUES (%s, %s, {_MS.format('%s')}, %s) "
        "ON CONFLICT (gateway_id) DO UPDATE SET state = EXCLUDED.state, "
        "state_ts = EXCLUDED.state_ts, updated_at = EXCLUDED.updated_at "
        "WHERE g.state_ts IS NULL OR g.state_ts <= EXCLUDED.state_ts",
        (gateway_id, state, ts, now),
    )


def record_gateway_event(
    conn: psycopg.Connection, *, gateway_id: str, event: str, ts: int, detail: str, now: datetime
) -> None:
    """Keep the newest event a gateway reported on its status topic (e.g. buffer_lost)."""
    conn.execute(
        "INSERT INTO gateway_status AS g (gateway_id, last_event, last_event_ts, "
        "last_event_detail, updated_at) "
        f"VALUES (%s, %s, {_MS.format('%s')}, %s, %s) "
        "ON CONFLICT (gateway_id) DO UPDATE SET last_event = EXCLUDED.last_event, "
        "last_event_ts = EXCLUDED.last_event_ts, last_event_detail = EXCLUDED.last_event_detail, "
        "updated_at = EXCLUDED.updated_at "
        "WHERE g.last_event_ts IS NULL OR g.last_event_ts <= EXCLUDED.last_event_ts",
        (gateway_id, event, ts, _text(detail), now),
    )


def register_session(conn: psycopg.Connection, *, client_id: str, at: datetime) -> None:
    """Remember the broker session of a worker (its MQTT client id)."""
    conn.execute(
        "INSERT INTO ingest_sessions (client_id, started_at) VALUES (%s, %s) "
        "ON CONFLICT (client_id) DO UPDATE SET started_at = EXCLUDED.started_at",
        (client_id, at),
    )


def registered_sessions(conn: psycopg.Connection, *, prefix: str) -> list[str]:
    """Client ids of the worker sessions named ``<prefix>-<index>``."""
    rows = conn.execute(
        "SELECT client_id FROM ingest_sessions WHERE client_id LIKE %s ORDER BY client_id",
        (prefix.replace("%", r"\%").replace("_", r"\_") + "-%",),
    ).fetchall()
    return [r[0] for r in rows]


def forget_session(conn: psycopg.Connection, *, client_id: str) -> None:
    """A drained and ended session is no longer a worker's."""
    conn.execute("DELETE FROM ingest_sessions WHERE client_id = %s", (client_id,))


def recent_message_rate(conn: psycopg.Connection, *, since: datetime) -> float:
    """Messages per second the fleet sends, from the gateways' latest health (polls/s)."""
    row = conn.execute(
        "SELECT coalesce(sum(polls_per_s), 0) FROM gateway_status WHERE health_ts >= %s",
        (since,),
    ).fetchone()
    return float(row[0]) if row else 0.0


def upsert_gateway_health(
    conn: psycopg.Connection,
    *,
    gateway_id: str,
    ts: int,
    figures: tuple[float, int, int, int, int],
    now: datetime,
) -> None:
    """Record a gateway's health figures unless newer ones are stored."""
    polls, errors, depth, dropped, unavailable = figures
    conn.execute(
        "INSERT INTO gateway_status AS g (gateway_id, polls_per_s, errors, buffer_depth, "
        "dropped, devices_unavailable, health_ts, updated_at) "
        f"VALUES (%s, %s, %s, %s, %s, %s, {_MS.format('%s')}, %s) "
        "ON CONFLICT (gateway_id) DO UPDATE SET polls_per_s = EXCLUDED.polls_per_s, "
        "errors = EXCLUDED.errors, buffer_depth = EXCLUDED.buffer_depth, "
        "dropped = EXCLUDED.dropped, devices_unavailable = EXCLUDED.devices_unavailable, "
        "health_ts = EXCLUDED.health_ts, updated_at = EXCLUDED.updated_at "
        "WHERE g.health_ts IS NULL OR g.health_ts <= EXCLUDED.health_ts",
        (gateway_id, polls, errors, depth, dropped, unavailable, ts, now),
    )


# -- dead letters --------------------------------------------------------------------------------


# An oversize message keeps its first 64 KiB and its size, not megabytes per copy.
DEAD_LETTER_KEEP_BYTES = 65_536


def _text(value: str) -> str:
    """Text PostgreSQL can store: a lone surrogate (from a lenient parser) is escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def insert_dead_letters(conn: psycopg.Connection, *, letters: Sequence[DeadLetter]) -> None:
    """Keep rejected messages with their raw bytes (the first 64 KiB), size and reason."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters "
            "(received_at, topic, payload, reason, detail, gateway_id, device_id, payload_size) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    d.received_at,
                    _text(d.topic),
                    d.payload[:DEAD_LETTER_KEEP_BYTES],
                    _text(d.reason),
                    _text(d.detail[:2000]),
                    None if d.gateway_id is None else _text(d.gateway_id),
                    None if d.device_id is None else _text(d.device_id),
                    len(d.payload),
                )
                for d in letters
            ],
        )


# -- storage maintenance -------------------------------------------------------------------------


def refresh_rollups(conn: psycopg.Connection, *, max_buckets: int = 24) -> int:
    """Roll up pending hours; returns how many hours were refreshed."""
    row = conn.execute("SELECT refresh_telemetry_hourly(%s)", (max_buckets,)).fetchone()
    return int(row[0]) if row else 0


def drop_partitions_before(conn: psycopg.Connection, *, day: date) -> list[str]:
    """Drop daily telemetry partitions that end on or before ``day`` (plain path)."""
    return [r[0] for r in conn.execute("SELECT drop_telemetry_partitions(%s)", (day,)).fetchall()]


def drop_chunks_before(conn: psycopg.Connection, *, day: date) -> list[str]:
    """Drop the telemetry chunks that end on or before ``day`` (TimescaleDB)."""
    rows = conn.execute("SELECT storage_drop_chunks_before(%s)", (day,)).fetchall()
    return [str(r[0]) for r in rows]


def compress_chunks_before(conn: psycopg.Connection, *, day: date) -> int:
    """Compress the telemetry chunks that end on or before ``day`` (TimescaleDB)."""
    row = conn.execute("SELECT storage_compress_chunks_before(%s)", (day,)).fetchone()
    return int(row[0]) if row else 0


def apply_timescale_policies(
    conn: psycopg.Connection, *, compress_after_days: int, retention_days: int
) -> bool:
    """Set the configured compression and retention policies; False on plain PostgreSQL."""
    if not has_timescaledb(conn):
        return False
    # the owner's function (ingest 0107): the application role may not change policies itself
    row = conn.execute(
        "SELECT storage_apply_policies(%s, %s)", (compress_after_days, retention_days)
    ).fetchone()
    return bool(row and row[0])


def try_lock(conn: psycopg.Connection, *, key: int) -> bool:
    """Take a session advisory lock if free (one maintenance run across workers)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection, *, key: int) -> None:
    """Release a session advisory lock."""
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


# -- reads that work on both storage paths -------------------------------------------------------


def telemetry_between(
    conn: psycopg.Connection, *, device_id: str, metric: str, start: datetime, end: datetime
) -> list[tuple[datetime, float, bool]]:
    """Raw samples of one metric in [start, end), oldest first."""
    return conn.execute(
        "SELECT ts, value, good FROM telemetry_series(%s, %s, %s, %s)",
        (device_id, metric, start, end),
    ).fetchall()


def hourly_rollups(
    conn: psycopg.Connection, *, device_id: str, metric: str, start: datetime, end: datetime
) -> list[tuple[datetime, int, float, float, float, float, float]]:
    """Hourly (bucket, samples, min, max, avg, first, last) of one metric in [start, end)."""
    return conn.execute(
        "SELECT bucket, samples, min_value, max_value, avg_value, first_value, last_value "
        "FROM telemetry_hourly WHERE device_id = %s AND metric = %s "
        "AND bucket >= %s AND bucket < %s ORDER BY bucket",
        (device_id, metric, start, end),
    ).fetchall()


def telemetry_storage(conn: psycopg.Connection) -> tuple[int, int]:
    """Total bytes (tables, indexes, TOAST) and points of the telemetry partitions or chunks."""
    points = '(SELECT coalesce(sum(cardinality("values")), 0) FROM telemetry_rows)'
    if has_timescaledb(conn):
        row = conn.execute(
            "SELECT (SELECT total_bytes FROM hypertable_detailed_size('telemetry_rows')), " + points
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0), "
            + points
            + " FROM pg_inherits WHERE inhparent = 'telemetry_rows'::regclass"
        ).fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1])


def compression_ratio(conn: psycopg.Connection) -> float | None:
    """Uncompressed / compressed bytes of compressed telemetry chunks (TimescaleDB), else None."""
    if not has_timescaledb(conn):
        return None
    row = conn.execute(
        "SELECT before_compression_total_bytes, after_compression_total_bytes "
        "FROM hypertable_compression_stats('telemetry_rows')"
    ).fetchone()
    if not row or not row[0] or not row[1]:
        return None
    return float(row[0]) / float(row[1])
