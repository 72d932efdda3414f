import logging
from datetime import date

import psycopg
import pytest

from fleet.factory import FleetFactory
from vigil.clock import FakeClock
from vigil.db import applied_versions, discover, has_timescaledb, migrate, timescaledb_available
from vigil.db.timescale import timescaledb_preloaded
from vigil.testing import timescaledb_wanted


def test_migrations_apply_to_an_empty_database_then_reapply_as_a_noop(empty_db_url):
    first = migrate(empty_db_url)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert migrate(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        assert set(applied_versions(conn)) == {m.version for m in discover()}


def test_an_edited_migration_is_refused(empty_db_url):
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(Exception, match="edited after it was applied"):
        migrate(empty_db_url)


def test_telemetry_is_a_hypertable_when_timescaledb_is_present(db):
    if not timescaledb_wanted():
        pytest.skip("the plain run: `make test` runs this with VIGIL_TEST_TIMESCALEDB=1")
    assert timescaledb_available(db) and has_timescaledb(db)
    row = db.execute(
        "SELECT count(*) AS n FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = 'telemetry_rows'"
    ).fetchone()
    assert row["n"] == 1
    # the key serves every read: no default (ts DESC) index slowing COPY down
    indexes = db.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'telemetry_rows'"
    ).fetchall()
    assert [i["indexdef"].split(" USING ")[1] for i in indexes] == ["btree (device_ref, ts)"]


def test_migrate_falls_back_to_plain_postgresql_when_timescaledb_is_not_preloaded(
    empty_db_url, caplog
):
    with psycopg.connect(empty_db_url) as conn:
        if not timescaledb_available(conn) or timescaledb_preloaded(conn):
            pytest.skip("needs TimescaleDB installed but not preloaded (the plain run)")
    with caplog.at_level(logging.WARNING, logger="vigil.db.timescale"):
        migrate(empty_db_url)  # used to end with FATAL from CREATE EXTENSION
    with psycopg.connect(empty_db_url) as conn:
        assert not has_timescaledb(conn)
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (0,)
    lines = [r.getMessage() for r in caplog.records if "shared_preload_libraries" in r.getMessage()]
    assert len(lines) == 1


def test_telemetry_is_partitioned_by_day_on_plain_postgresql(db):
    if has_timescaledb(db):
        pytest.skip("TimescaleDB is present: telemetry is a hypertable instead")
    created = db.execute(
        "SELECT ensure_telemetry_partitions(%s, %s) AS n", (date(2026, 1, 1), date(2026, 1, 3))
    ).fetchone()
    assert created["n"] == 3
    again = db.execute(
        "SELECT ensure_telemetry_partitions(%s, %s) AS n", (date(2026, 1, 1), date(2026, 1, 3))
    ).fetchone()
    assert again["n"] == 0
    ids = seed_site(db)
    ids["fleet"].device("e1", site=ids["site"], model="T")
    db.execute(
        "INSERT INTO telemetry (device_id, metric, ts, value) "
        "VALUES ('e1', 'floor', '2026-01-02T23:59:59.999Z', 3)"
    )
    row = db.execute("SELECT tableoid::regclass::text AS part FROM telemetry_rows").fetchone()
    assert row["part"] == "telemetry_rows_p20260102"
    # A timestamp with no partition is refused, not silently dropped.
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO telemetry (device_id, metric, ts, value) "
            "VALUES ('e1', 'floor', '2027-01-01T00:00Z', 3)"
        )


def seed_site(db) -> dict:
    """A jurisdiction, user unit, site and firm, through the fleet service. The tests below then
    write bad rows straight to the tables: the schema must refuse them even past the service."""
    fleet = FleetFactory(db, at=FakeClock().now())
    j = fleet.jurisdiction("sh", name="Shanghai")
    u = fleet.user_unit("Tower Co")
    s = fleet.site(code="tower-a", user_unit=u, jurisdiction=j, name="Tower A")
    f = fleet.firm("LiftCare", licence_no="L-1")
    return {"jurisdiction": j, "unit": u, "site": s, "firm": f, "fleet": fleet}


def test_constraints_keep_invalid_states_out(db):
    ids = seed_site(db)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO jurisdictions (code, name, lockout_mode) VALUES ('x', 'X', 'sometimes')"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO sites (user_unit_id, jurisdiction_id, name, latitude, longitude, tier) "
            "VALUES (%s, %s, 'B', 95, 0, 'city')",
            (ids["unit"], ids["jurisdiction"]),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO devices (id, kind, model, site_id) VALUES ('e1', 'toaster', 'T', %s)",
            (ids["site"],),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO devices (id, kind, model, site_id) VALUES ('bad/id', 'elevator', 'T', %s)",
            (ids["site"],),
        )
    # A regulator must be scoped to a jurisdiction and nothing else.
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO users (username, password_hash, role, firm_id) "
            "VALUES ('reg', 'h', 'regulator', %s)",
            (ids["firm"],),
        )
    with pytest.raises(psycopg.errors.IntegrityError):
        db.execute("INSERT INTO users (username, password_hash, role) VALUES ('x', 'h', 'king')")


def test_contract_periods_of_one_device_never_overlap(db):
    ids = seed_site(db)
    ids["fleet"].device("e1", site=ids["site"], model="SIM-LIFT-1")
    insert = (
        "INSERT INTO contracts (firm_id, user_unit_id, device_id, period) "
        "VALUES (%s, %s, 'e1', daterange(%s, %s))"
    )
    db.execute(insert, (ids["firm"], ids["unit"], date(2026, 1, 1), date(2027, 1, 1)))
    with pytest.raises(psycopg.errors.ExclusionViolation):
        db.execute(insert, (ids["firm"], ids["unit"], date(2026, 6, 1), date(2027, 6, 1)))
    db.execute(insert, (ids["firm"], ids["unit"], date(2027, 1, 1), date(2028, 1, 1)))


def test_technician_user_belongs_to_the_technicians_firm(db):
    ids = seed_site(db)
    other = ids["fleet"].firm("Other", licence_no="L-2")
    tech = ids["fleet"].technician(firm=ids["firm"], name="Wang", certificate_no="C-1")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(
            "INSERT INTO users (username, password_hash, role, firm_id, technician_id) "
            "VALUES ('wang', 'h', 'technician', %s, %s)",
            (other, tech),
        )
    db.execute(
        "INSERT INTO users (username, password_hash, role, firm_id, technician_id) "
        "VALUES ('wang', 'h', 'technician', %s, %s)",
        (ids["firm"], tech),
    )
