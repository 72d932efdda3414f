"""Detect TimescaleDB: use it where it is there, never assume it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the server could load the timescaledb extension."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def timescaledb_preloaded(conn: psycopg.Connection) -> bool:
    """True when the server loads timescaledb at start (``shared_preload_libraries``)."""
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    libraries = str(row[0]) if row else ""
    return "timescaledb" in [name.strip().strip('"') for name in libraries.split(",")]


def has_timescaledb(conn: psycopg.Connection) -> bool:
    """True when timescaledb is installed in this database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def try_enable_timescaledb(conn: psycopg.Connection) -> bool:
    """Create the extension when it is available and loadable; False (and no harm) otherwise."""
    if has_timescaledb(conn):
        return True
    if not timescaledb_available(conn):
        return False
    if not timescaledb_preloaded(conn):
        # CREATE EXTENSION would end the connection with FATAL: say so once and go plain.
        log.warning(
            "TimescaleDB is installed but not in shared_preload_libraries; using plain "
            "PostgreSQL storage (add shared_preload_libraries = 'timescaledb' and restart "
            "PostgreSQL to use it)"
        )
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error:
        # Available but not preloaded (shared_preload_libraries): plain PostgreSQL path.
        return False
    return True


@dataclass(frozen=True, slots=True)
class StalledJob:
    """A TimescaleDB policy job of a hypertable that its scheduler does not get done."""

    job_id: int
    name: str  # policy_compression, policy_retention, ...
    problem: str  # the scheduler's last error, or how long the job is overdue


# A job is stalled when its last scheduled run failed, or when its next start is well past
# (the scheduler is not running it at all). On PostgreSQL 15.20 every policy job fails with
# "cannot drop portal" while `CALL run_job(id)` works (../shared/vendor/README.md).
STALLED_JOBS_SQL = """
SELECT j.job_id, j.proc_name,
       CASE WHEN s.last_run_status = 'Failed'
            THEN 'failed: ' || coalesce((SELECT e.err_message
                                         FROM timescaledb_information.job_errors e
                                         WHERE e.job_id = j.job_id
                                         ORDER BY e.finish_time DESC LIMIT 1), 'no message')
            ELSE 'overdue since ' || j.next_start::text END AS problem
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
WHERE j.hypertable_name = %(hypertable)s AND j.scheduled
  AND (s.last_run_status = 'Failed' OR j.next_start < now() - interval '15 minutes')
ORDER BY j.job_id
"""


def stalled_jobs(conn: psycopg.Connection, *, hypertable: str) -> list[StalledJob]:
    """Policy jobs of ``hypertable`` that fail or do not run; empty without TimescaleDB."""
    if not has_timescaledb(conn):
        return []
    rows = conn.execute(STALLED_JOBS_SQL, {"hypertable": hypertable}).fetchall()
    return [StalledJob(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def job_failure_counts(conn: psycopg.Connection) -> list[tuple[dict[str, str], float]]:
    """Failed runs of each TimescaleDB background job, by job (empty without TimescaleDB)."""
    if not has_timescaledb(conn):
        return []
    rows = conn.execute(
        "SELECT j.proc_name, coalesce(j.hypertable_name, ''), sum(s.total_failures) "
        "FROM timescaledb_information.jobs j "
        "JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id "
        "GROUP BY 1, 2"
    ).fetchall()
    return [({"job": str(r[0]), "hypertable": str(r[1])}, float(r[2] or 0)) for r in rows]
