"""Detect TimescaleDB: use it where it is there, never assume it."""

from __future__ import annotations

import logging

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
