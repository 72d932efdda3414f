"""Bring up the database and broker a process needs: configured ones, or embedded ones."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from vigil.config import Settings
from vigil.db import migrate
from vigil.services import MosquittoBroker, PostgresServer

log = logging.getLogger(__name__)

DATABASE_NAME = "vigil"


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

    With ``fresh``, an embedded database is dropped and created anew (the demo starts clean).
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
            database_url = server.url(database)
            log.info("embedded PostgreSQL at %s", database_url)
        mqtt_url = settings.mqtt_url
        if mqtt_url is None:
            broker = MosquittoBroker(settings.data_dir.absolute() / "mosquitto")
            broker.start()
            stack.callback(broker.stop)
            mqtt_url = broker.url
            log.info("embedded Mosquitto at %s", mqtt_url)
        applied = migrate(database_url)
        log.info("database migrated (%d migrations applied now)", len(applied))
        yield Endpoints(
            database_url,
            mqtt_url,
            embedded_database=settings.database_url is None,
            embedded_broker=settings.mqtt_url is None,
        )


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The migrated database's URL: the configured one, or an embedded server's (no broker)."""
    with endpoints(settings.model_copy(update={"mqtt_url": "mqtt://unused"})) as where:
        yield where.database_url
