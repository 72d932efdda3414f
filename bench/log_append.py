"""Benchmark: what one compliance-log append costs on an empty log and on a large one (rule A1).

    vigil bench log_append [--entries 300000] [--appends 2000]

Starts a private PostgreSQL (fsync off) and migrates it. The log is analysed while empty (as
autovacuum does on a new database); one long-lived session (as the engine's is) appends
``--appends`` entries to the empty log, then another connection loads ``--entries``
entries (a valid chain, COPY), and the same session appends ``--appends`` again. Each append is
its own transaction, as the engine's are. It does this twice in the same run: with the insert
trigger and head lookup before compliance 0210 (``ORDER BY seq DESC LIMIT 1`` per entry, whose
plan a session made on the empty log and kept), and with the one-row head of 0210. It prints µs
per append at each size and the ratio large / empty: 1.0 means an append costs the same at 10
entries and at millions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from compliance.log import service
from vigil.db import migrate
from vigil.services import PostgresServer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEGACY_HEAD = "SELECT seq, hash FROM compliance_log ORDER BY seq DESC LIMIT 1"
LEGACY_TRIGGER = """
CREATE OR REPLACE FUNCTION compliance_log_check_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE head_seq bigint; head_hash text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM compliance_log ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN head_seq := 0; head_hash := repeat('0', 64); END IF;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'entry % does not extend the head', NEW.seq;
    END IF;
    RETURN NEW;
END $$"""


def _append(conn: psycopg.Connection, *, head_sql: str, n: int, start: int) -> float:
    """Append ``n`` entries, each in its own transaction; seconds taken."""
    started = time.perf_counter()
    for i in range(n):
        with conn.transaction(), conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (service.LOG_LOCK_KEY,))
            head = cur.execute(head_sql).fetchone()
            row = service._row(
                head=head,
                kind="maintenance.verdict",
                subject_type="device",
                subject_id=f"lift-{(start + i) % 1000}",
                body={"n": start + i, "verdict": "verified"},
                actor="engine",
                at=T0 + timedelta(seconds=start + i),
            )
            cur.execute(service._INSERT, row)
    return time.perf_counter() - started


def _load(url: str, *, entries: int, legacy: bool) -> None:
    """Extend the log by ``entries`` valid entries in one COPY (triggers off), head moved."""
    with psycopg.connect(url, autocommit=True) as conn:
        head = conn.execute(LEGACY_HEAD).fetchone()
        last = {"seq": head[0], "hash": head[1]} if head else None
        conn.execute("SET session_replication_role = replica")
        columns = "(seq, kind, subject_type, subject_id, body, actor, at, prev_hash, hash)"
        with conn.cursor().copy(f"COPY compliance_log {columns} FROM STDIN") as copy:
            for i in range(entries):
                last = service._row(
                    head=last,
                    kind="maintenance.verdict",
                    subject_type="device",
                    subject_id=f"lift-{i % 1000}",
                    body={"n": i, "verdict": "verified"},
                    actor="engine",
                    at=T0 + timedelta(days=1, seconds=i),
                )
                copy.write_row([last[k] for k in columns.strip("()").split(", ")])
        if not legacy and last is not None:
            conn.execute(
                "UPDATE compliance_log_head SET seq = %s, hash = %s", (last["seq"], last["hash"])
            )


def _run(url: str, *, entries: int, appends: int, legacy: bool) -> tuple[float, float]:
    head_sql = LEGACY_HEAD if legacy else service._HEAD
    with psycopg.connect(url) as conn:
        if legacy:
            conn.execute(LEGACY_TRIGGER)
        # statistics taken while the log was empty, as autovacuum takes them on a new database
        conn.execute("ANALYZE compliance_log")
        conn.commit()
        empty = _append(conn, head_sql=head_sql, n=appends, start=0)
        _load(url, entries=entries, legacy=legacy)
        full = _append(conn, head_sql=head_sql, n=appends, start=appends + entries)
    return empty / appends * 1e6, full / appends * 1e6


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="vigil bench log_append")
    parser.add_argument("--entries", type=int, default=300_000, help="entries loaded in between")
    parser.add_argument("--appends", type=int, default=2_000, help="appends timed at each size")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-log-"))
    scratch.chmod(0o755)  # PostgreSQL runs as another user when we are root
    server = PostgresServer(scratch / "data", durable=False)
    server.start()
    try:
        rows = []
        for legacy in (True, False):
            name = "legacy" if legacy else "head"
            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            url = server.url(name)
            migrate(url)
            print(f"{name}: {args.appends} appends, {args.entries:,} loaded, {args.appends} more")
            rows.append(
                (name, *_run(url, entries=args.entries, appends=args.appends, legacy=legacy))
            )
        print()
        large = f"at {args.entries:,}"
        print(f"{'trigger':<44} {'µs/append, empty':>16} {large:>14} ratio")
        for name, empty, full in rows:
            label = (
                "before 0210 (ORDER BY seq DESC LIMIT 1)"
                if name == "legacy"
                else "0210 (one-row head)"
            )
            print(f"{label:<44} {empty:>16.0f} {full:>14.0f} {full / empty:5.2f}")
    finally:
        server.stop(mode="immediate")
    return 0
