"""Database access: connection pool, migrations and TimescaleDB detection."""

from vigil.db.migrate import MigrationError, applied_versions, discover, migrate
from vigil.db.pool import connect, open_pool
from vigil.db.timescale import (
    StalledJob,
    has_timescaledb,
    stalled_jobs,
    timescaledb_available,
)

__all__ = [
    "MigrationError",
    "StalledJob",
    "applied_versions",
    "connect",
    "discover",
    "has_timescaledb",
    "migrate",
    "open_pool",
    "stalled_jobs",
    "timescaledb_available",
]
