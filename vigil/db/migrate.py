"""Versioned SQL migrations, applied in order, recorded in ``schema_migrations``.

Each domain package keeps its own ``migrations/NNNN_name.sql`` files; versions are global, so
the core schema (0001-0099) comes before ingest (01xx), compliance (02xx), alerts and rescue
(03xx) and the API (04xx). A small runner instead of a library: it must order files from several
packages, hold an advisory lock so concurrent starts are safe, and refuse an edited migration.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata, resources

import psycopg
from psycopg.rows import tuple_row

from vigil.db.timescale import try_enable_timescaledb

log = logging.getLogger(__name__)

# Packages declare their migrations as entry points of this group (pyproject.toml): the kernel
# names no domain.
ENTRY_POINT_GROUP = "vigil.migrations"
_LOCK_KEY = 0x5649_4749  # "VIGI"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration could not be applied, or an applied one was changed."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    package: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migration_packages() -> tuple[str, ...]:
    """The kernel's own migrations and those of every package that declares some."""
    declared = sorted({e.value for e in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    return ("vigil.db", *declared)


def discover(packages: tuple[str, ...] | None = None) -> list[Migration]:
    """All migrations of the given packages (default: every declared one), ordered by version."""
    if packages is None:
        packages = migration_packages()
    found: dict[int, Migration] = {}
    for package in packages:
        try:
            folder = resources.files(package) / "migrations"
        except ModuleNotFoundError:
            continue
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _NAME.match(entry.name)
            if not match:
                continue
            migration = Migration(int(match[1]), match[2], package, entry.read_text("utf-8"))
            if migration.version in found:
                other = found[migration.version]
                raise MigrationError(
                    f"version {migration.version} is used twice: "
                    f"{other.package}/{other.name} and {package}/{migration.name}"
                )
            found[migration.version] = migration
    return [found[v] for v in sorted(found)]


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Applied versions and their checksums."""
    cur = conn.cursor(row_factory=tuple_row)
    exists = cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = cur.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {version: checksum for version, checksum in rows}


def migrate(
    url: str,
    *,
    timescaledb: bool = True,
    up_to: int | None = None,
    progress: Callable[[list[Migration]], Iterable[Migration]] | None = None,
) -> list[Migration]:
    """Apply every pending migration (those up to version ``up_to`` when given: upgrade tests);
    a no-op when all are applied. Returns what was applied. ``progress`` wraps the list walked
    (a command's progress bar)."""
    migrations = [m for m in discover() if up_to is None or m.version <= up_to]
    applied: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       package    text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            if timescaledb:
                try_enable_timescaledb(conn)
            done = applied_versions(conn)
            for migration in migrations if progress is None else progress(migrations):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} was edited after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                _apply(conn, migration)
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    log.info("applying migration %04d_%s", migration.version, migration.name)
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, package, checksum) "
                "VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.package, migration.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} ({migration.package}) failed: "
            f"{exc}"
        ) from exc
