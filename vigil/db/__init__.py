"""Database access: connection pool, migrations and TimescaleDB detection."""

from vigil.db.migrate import MigrationError, applied_versions, discover, migrate
from vigil.db.pool import connect, open_pool
from vigil.db.timescale import has_timescaledb, timescaledb_available

__all__ = [
    "MigrationError",
    "applied_versions",
    "connect",
    "discover",
    "has_timescaledb",
    "migrate",
    "open_pool",
    "timescaledb_available",
]
