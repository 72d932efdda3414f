"""Bring up the database and broker a process needs: configured ones, or embedded ones."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from vigil.config import Settings
from vigil.db import migrate
from vigil.db.migrate import Migration
from vigil.db.roles import APP_ROLE, ensure_role, grant_app_rights
from vigil.services import MosquittoBroker, PostgresServer

log = logging.getLogger(__name__)

DATABASE_NAME = "vigil"
APP_PASSWORD_FILE = "postgres-app.password"  # in the data directory, mode 0600


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the database and the broker are."""

    database_url: str
    mqtt_url: str
    embedded_database: bool
    embedded_broker: bool


@contextlib.contextmanager
def endpoints(
    settings: Settings, *, database: str = DATABASE_NAME, fresh: bool = False
) -> Iterator[Endpoints]:
    """Yield migrated database and broker URLs; embedded servers are stopped on exit.

    With ``fresh``, an embedded database is dropped and created anew, and an embedded broker
    forgets its saved sessions (the demo starts clean: the last run's queued messages, for the
    last run's database, are not replayed into this one's dead letters).
    """
    with contextlib.ExitStack() as stack:
        database_url = settings.database_url
        if database_url is None:
            server = PostgresServer(settings.data_dir.absolute() / "postgres")
            if server.data_dir.parent.exists():
                server.data_dir.parent.chmod(0o755)
            else:
                server.data_dir.parent.mkdir(parents=True, mode=0o755)
            server.start()
            stack.callback(server.stop)
            with psycopg.connect(server.url(), autocommit=True) as conn:
                if fresh:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{database}"')
            admin_url = server.url(database)
            # every process connects as the application role, never as the superuser
            app_password = _secret(settings.data_dir.absolute() / APP_PASSWORD_FILE)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                ensure_role(conn, role=APP_ROLE, password=app_password)
            database_url = server.url(database, user=APP_ROLE, password=app_password)
            log.info("embedded PostgreSQL on 127.0.0.1:%d, database %s", server.port, database)
        else:
            admin_url = settings.database_admin_url or database_url
        mqtt_url = settings.mqtt_url
        if mqtt_url is None:
            broker = MosquittoBroker(settings.data_dir.absolute() / "mosquitto")
            if fresh:
                broker.forget_sessions()
            broker.start()
            stack.callback(broker.stop)
            mqtt_url = broker.url
            log.info("embedded Mosquitto at %s", mqtt_url)
        applied = migrate_and_grant(admin_url=admin_url, app_url=database_url)
        log.info("database migrated (%d migrations applied now)", len(applied))
        yield Endpoints(
            database_url,
            mqtt_url,
            embedded_database=settings.database_url is None,
            embedded_broker=settings.mqtt_url is None,
        )


def migrate_and_grant(
    *,
    admin_url: str,
    app_url: str,
    progress: Callable[[list[Migration]], Iterable[Migration]] | None = None,
) -> list[Migration]:
    """Migrate as the schema's owner; then, when the application connects as another role,
    grant that role what it uses and nothing more (``vigil.db.roles``)."""
    applied = migrate(admin_url, progress=progress)
    app_user = conninfo_to_dict(app_url).get("user")
    if app_user and app_user != conninfo_to_dict(admin_url).get("user"):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            grant_app_rights(conn, role=str(app_user))
    return applied


def _secret(path: Path) -> str:
    """The password kept in ``path`` (mode 0600), made on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The migrated database's URL: the configured one, or an embedded server's (no broker)."""
    with endpoints(settings.model_copy(update={"mqtt_url": "mqtt://unused"})) as where:
        yield where.database_url
