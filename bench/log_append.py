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

Then batches (``--batches``): a sweep appends its thousands of entries in one transaction. With
0210's per-row link check (the head row moved once per entry) each entry steps over the head
versions the earlier ones left in that transaction, so an entry costs more the larger the
batch; compliance 0213 checks a batch's links once per statement. It prints µs per entry for
each batch size, both ways, in the same run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
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


def _function_of(migration: str) -> str:
    """The link-check function as a migration of compliance created it (its own text)."""
    text = resources.files("compliance").joinpath(f"migrations/{migration}").read_text("utf-8")
    found = re.search(
        r"CREATE (?:OR REPLACE )?FUNCTION compliance_log_check_link\(\).*?\$\$;", text, re.S
    )
    assert found, migration
    return found.group(0).rstrip(";")


ROW_TRIGGER_0210 = _function_of("0210_log_head.sql")


def _use_row_trigger(conn: psycopg.Connection, function: str) -> None:
    """Put a per-row link check (``function``'s body) in place of 0213's per-statement one."""
    conn.execute("DROP TRIGGER compliance_log_links ON compliance_log")
    conn.execute("DROP FUNCTION IF EXISTS compliance_log_check_link()")
    conn.execute(function.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION"))
    conn.execute(
        "CREATE TRIGGER compliance_log_link BEFORE INSERT ON compliance_log "
        "FOR EACH ROW EXECUTE FUNCTION compliance_log_check_link()"
    )


def _batch(conn: psycopg.Connection, *, size: int, start: int, per_row: bool) -> float:
    """Append ``size`` entries in one transaction; seconds taken. ``per_row``: one INSERT per
    entry (as before 0213), else append_many's one statement."""
    items = [
        {
            "kind": "escalation.transition",
            "subject_type": "device",
            "subject_id": f"lift-{start + i}",
            "body": {"from": "ok", "to": "due_soon", "n": start + i},
            "actor": "engine",
            "at": T0 + timedelta(days=2, seconds=start + i),
        }
        for i in range(size)
    ]
    started = time.perf_counter()
    if per_row:
        with conn.transaction(), conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (service.LOG_LOCK_KEY,))
            last = cur.execute(service._HEAD).fetchone()
            rows = []
            for item in items:
                last = service._row(head=last, **item)
                rows.append(last)
            cur.executemany(service._INSERT, rows)
    else:
        service.append_many(conn, items=items)
    return time.perf_counter() - started


def _batches(url: str, *, sizes: list[int], per_row: bool) -> list[float]:
    """µs per entry for a batch of each size."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        if per_row:
            _use_row_trigger(conn, ROW_TRIGGER_0210)
        start = 0
        for size in sizes:
            out.append(_batch(conn, size=size, start=start, per_row=per_row) / size * 1e6)
            start += size
    return out


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
            _use_row_trigger(conn, LEGACY_TRIGGER)
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
    parser.add_argument(
        "--batches", default="100,1000,10000,50000", help="entries per transaction, timed"
    )
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
                else "0210+0213 (one-row head, per statement)"
            )
            print(f"{label:<44} {empty:>16.0f} {full:>14.0f} {full / empty:5.2f}")
        sizes = [int(n) for n in args.batches.split(",")]
        timed = {}
        for per_row in (True, False):
            name = "batch_row" if per_row else "batch_statement"
            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            migrate(server.url(name))
            timed[per_row] = _batches(server.url(name), sizes=sizes, per_row=per_row)
        print()
        print(f"{'entries in one transaction':<28} {'0210 per row':>14} {'0213 per statement':>20}")
        for size, row, statement in zip(sizes, timed[True], timed[False], strict=True):
            print(f"{size:<28,} {row:>11.0f} µs {statement:>17.0f} µs")
        growth_row = timed[True][-1] / timed[True][0]
        growth_statement = timed[False][-1] / timed[False][0]
        print(
            f"µs per entry, largest batch / smallest: 0210 {growth_row:.2f}, "
            f"0213 {growth_statement:.2f} (1.0: the same cost per entry at any batch size)"
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(scratch, ignore_errors=True)  # a throwaway cluster of many GB
    return 0
