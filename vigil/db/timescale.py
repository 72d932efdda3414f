"""Detect TimescaleDB: use it where it is there, never assume it."""

from __future__ import annotations

import psycopg


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the server could load the timescaledb extension."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


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
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error:
        # Available but not preloaded (shared_preload_libraries): plain PostgreSQL path.
        return False
    return True
