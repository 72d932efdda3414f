"""Least privilege: every process connects as an application role that reads and writes rows
and nothing more; the compliance log is insert-only for it; storage upkeep still works through
the owner's functions. Runs on both storage paths (scripts/timescaledb-tests.sh)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from compliance.log import service as compliance_log
from fleet.factory import FleetFactory
from ingest import scheduled as ingest_scheduled
from tests.ingest.conftest import ingest_settings, make_batch, make_writer, register_fleet
from vigil import wire
from vigil.db.roles import ensure_role, grant_app_rights
from vigil.embedded import migrate_and_grant
from vigil.wire import Sample, TelemetryBatch

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user)}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
def app_url(db_url):
    """The test database as a fresh application role (roles are cluster-wide: a unique name)."""
    role, password = f"app_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_role(conn, role=role, password=password)
        grant_app_rights(conn, role=role)
    try:
        yield as_user(db_url, role, password)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE compliance_log SET actor = 'mallory'",
        "DELETE FROM compliance_log",
        "TRUNCATE compliance_log",
        "ALTER TABLE compliance_log DISABLE TRIGGER USER",
        "UPDATE compliance_checkpoints SET signature = 'x'",
        "UPDATE compliance_log_leaves SET leaf_hash = 'x'",
        "UPDATE compliance_log_head SET seq = 0",
        "DELETE FROM schema_migrations",
        "CREATE TABLE backdoor (x int)",
        "DROP TABLE devices",
        "TRUNCATE devices",
        "ALTER TABLE devices ADD COLUMN x int",
        "CREATE ROLE mallory",
    ],
)
def test_the_application_role_may_not(app_url, statement):
    with psycopg.connect(app_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute(statement)
    # refused by the rights, not only by the log's own triggers
    assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)


def test_the_application_role_writes_rows_and_appends_to_the_log(app_url):
    with psycopg.connect(app_url, autocommit=True) as conn:
        site = FleetFactory(conn, at=T0).site()
        FleetFactory(conn, at=T0).device("lift-1", site=site)
        entry = compliance_log.append(
            conn,
            kind="maintenance.verdict",
            subject_type="device",
            subject_id="lift-1",
            body={"verdict": "verified"},
            actor="engine",
            at=T0,
        )
        assert entry.seq == 1
        conn.execute("UPDATE devices SET serial_no = 'S-1' WHERE id = 'lift-1'")


def test_ingest_and_its_storage_upkeep_run_as_the_application_role(app_url, clock, unique_id):
    # partitions, roll-ups, retention and (on TimescaleDB) policies and compression need the
    # owner's rights: the owner's functions give exactly those (ingest 0107)
    fleet = register_fleet(app_url, gateway=unique_id)
    meter = fleet.meters[0]
    hour = (clock.now_ms() // 3_600_000 - 2) * 3_600_000
    writer = make_writer(app_url, clock)
    try:
        result = writer.store(
            make_batch(
                clock,
                wire.encode(
                    TelemetryBatch(fleet.gateway, meter, 1, (Sample("power_total", hour, 5.0),))
                ),
            )
        )
        assert result.points_stored == 1 and result.dead_letters == 0
    finally:
        writer.conn.close()
    upkeep = ingest_scheduled.upkeep_once(
        database_url=app_url, settings=ingest_settings(), clock=clock, apply_policies=True
    )
    assert upkeep is not None and upkeep.hours_rolled_up >= 1


def test_migrate_and_grant_gives_a_second_role_its_rights(db_url):
    role, password = f"app_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_role(conn, role=role, password=password)
    app = as_user(db_url, role, password)
    try:
        migrate_and_grant(admin_url=db_url, app_url=app)
        with psycopg.connect(app, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM compliance_log")
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_the_embedded_server_asks_for_a_password_also_on_loopback(postgres_admin_url):
    url = urlsplit(postgres_admin_url)
    if url.password is None:
        pytest.skip("an external test server: its authentication is its own")
    host = url.netloc.rsplit("@", 1)[-1]
    bare = urlunsplit((url.scheme, f"{url.username}@{host}", url.path, "", ""))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(bare, connect_timeout=5).close()
    wrong = urlunsplit((url.scheme, f"{url.username}:wrong@{host}", url.path, "", ""))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5).close()
