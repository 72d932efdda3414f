"""pytest plugin: real PostgreSQL and Mosquitto for tests, and a fake clock.

Session fixtures start a private PostgreSQL and a private Mosquitto on free ports, unless
``VIGIL_TEST_DATABASE_URL`` / ``VIGIL_TEST_MQTT_URL`` point at servers to use instead. Each test
that asks for ``db_url`` gets a fresh database cloned from a migrated template. Fault tests ask
for ``broker`` or ``private_postgres``: instances of their own that they may stop, kill and
restart. Teardown leaves no process behind.

With ``VIGIL_TEST_TIMESCALEDB=1`` the private servers load TimescaleDB, so the same tests run
against the hypertable path (``make test`` runs the storage tests that way a second time when
TimescaleDB is installed, see scripts/ensure-timescaledb.sh).

Use it with ``pytest_plugins = ["vigil.testing"]`` in a conftest.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from vigil.broker import broker_address
from vigil.clock import Clock, FakeClock
from vigil.config import Settings
from vigil.db import migrate
from vigil.resources import Resources, open_resources
from vigil.services import MosquittoBroker, PostgresServer

DATABASE_ENV = "VIGIL_TEST_DATABASE_URL"
MQTT_ENV = "VIGIL_TEST_MQTT_URL"
TIMESCALEDB_ENV = "VIGIL_TEST_TIMESCALEDB"


def timescaledb_wanted() -> bool:
    """True when the private test servers should load TimescaleDB."""
    return os.environ.get(TIMESCALEDB_ENV, "") not in ("", "0")


def _scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    # PostgreSQL runs as another user when we are root: it must be able to reach its data dir.
    path.chmod(0o755)
    return path


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a maintenance database on the test server (private unless the env var is set)."""
    external = os.environ.get(DATABASE_ENV)
    if external:
        yield external
        return
    server = PostgresServer(
        _scratch_dir("vigil-pg-") / "data", durable=False, timescaledb=timescaledb_wanted()
    )
    atexit.register(server.stop, mode="immediate")
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop(mode="immediate")


@pytest.fixture(scope="session")
def template_database(postgres_admin_url: str) -> Iterator[str]:
    """Name of a migrated template database that test databases are cloned from."""
    name = f"vigil_template_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(with_database(postgres_admin_url, name))
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        # Cloning needs the template to itself: TimescaleDB's job scheduler would connect to it
        # (and race the clones) unless connections are refused.
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield name
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(admin_url: str, template: str) -> str:
    """Clone ``template`` into a fresh database; returns its URL."""
    name = f"vigil_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop a test database, disconnecting whoever still uses it."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    url = create_database(postgres_admin_url, template_database)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, url)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's fresh database (dict rows)."""
    from psycopg.rows import dict_row

    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def empty_db_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"vigil_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, url)


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (migrated ``vigil`` database) that it may restart."""
    server = PostgresServer(
        _scratch_dir("vigil-pgx-") / "data", durable=True, timescaledb=timescaledb_wanted()
    )
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE vigil")
        migrate(server.url("vigil"))
        yield server
    finally:
        server.stop(mode="immediate")


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """URL of the shared test broker (private unless the env var is set)."""
    external = os.environ.get(MQTT_ENV)
    if external:
        yield external
        return
    broker = MosquittoBroker(_scratch_dir("vigil-mqtt-"))
    atexit.register(broker.kill)
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A broker of the test's own, which it may stop, kill and restart on the same port."""
    instance = MosquittoBroker(_scratch_dir("vigil-mqttx-"))
    instance.start()
    try:
        yield instance
    finally:
        instance.kill()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at a fixed start time."""
    return FakeClock()


@pytest.fixture
def resources_for(
    db_url: str, mqtt_url: str, clock: FakeClock
) -> Callable[..., AbstractAsyncContextManager[Resources]]:
    """What a process's composition root builds, on the test database and broker:
    ``async with resources_for(settings=...) as resources`` (the test's clock unless given)."""

    def make(
        *, settings: Settings | None = None, clock: Clock = clock, database_url: str = db_url
    ) -> AbstractAsyncContextManager[Resources]:
        return open_resources(
            database_url=database_url,
            mqtt_url=mqtt_url,
            clock=clock,
            settings=settings or Settings(),
        )

    return make


@pytest.fixture
def unique_id() -> str:
    """A short identifier unique to this test (for gateway ids and topics on a shared broker)."""
    return f"t{uuid.uuid4().hex[:10]}"


class MqttProbe:
    """A subscriber for tests: collects messages on a topic filter and waits for them."""

    def __init__(self, url: str, topic_filter: str, *, qos: int = 1) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.messages: list[mqtt.MQTTMessage] = []
        self._arrived = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        where = broker_address(url)
        if where.username is not None:
            self._client.username_pw_set(where.username, where.password)
        self._client.connect(where.host, where.port)
        self._client.subscribe(topic_filter, qos=qos)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic_filter}")

    def _on_message(self, _client: object, _userdata: object, message: object) -> None:
        with self._arrived:
            self.messages.append(message)  # type: ignore[arg-type]
            self._arrived.notify_all()

    def wait_for(self, count: int = 1, *, timeout: float = 10.0) -> list:
        """Wait until ``count`` messages have arrived; returns them all."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"{len(self.messages)} of {count} messages after {timeout}s")
            return list(self.messages)

    def close(self) -> None:
        """Disconnect."""
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> MqttProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
