"""Telemetry layout (migration 0105): one row per (device, ts) holding its metrics, every
guarantee of one row per point kept: dedup, late data merged, conflicts recorded, flags."""

from __future__ import annotations

import psycopg
import pytest

from ingest import service
from ingest.binary import group_samples
from tests.ingest.conftest import Fleet, count, make_batch, make_writer, register_fleet
from vigil import wire
from vigil.clock import from_ms
from vigil.db import migrate
from vigil.wire import Sample, TelemetryBatch

METRICS = ("voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "frequency")


def _points(db_url: str, device: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT metric, ts, value, good FROM telemetry WHERE device_id = %s "
            "ORDER BY ts, metric",
            (device,),
        ).fetchall()


def _message(fleet, device: str, seq: int, samples: list[Sample]) -> tuple[str, bytes]:
    return wire.encode(TelemetryBatch(fleet.gateway, device, seq, tuple(samples)))


def test_a_row_holds_every_metric_of_an_instant(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    meter = fleet.meters[0]
    now = clock.now_ms()
    samples = [
        Sample(m, now - 1000 * t, 230.0 + t + i, good=(m != "frequency"))
        for t in range(4)
        for i, m in enumerate(METRICS)
    ]
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(make_batch(clock, _message(fleet, meter, 1, samples)))
    finally:
        writer.conn.close()
    assert result.points_stored == 20
    assert count(db_url, "SELECT count(*) FROM telemetry_rows") == 4  # one per instant
    stored = _points(db_url, meter)
    assert sorted((m, v, g) for m, _, v, g in stored) == sorted(
        (s.metric, s.value, s.good) for s in samples
    )
    # the chart's read: one metric through the (device, ts) key
    with psycopg.connect(db_url) as conn:
        series = service.telemetry_between(
            conn,
            device_id=meter,
            metric="frequency",
            start=from_ms(now - 10_000),
            end=from_ms(now + 1),
        )
    assert [(v, g) for _, v, g in series] == [(230.0 + t + 4, False) for t in (3, 2, 1, 0)]


def test_late_metrics_of_a_stored_instant_join_its_row(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    meter = fleet.meters[0]
    ts = clock.now_ms() - 5000
    first = _message(fleet, meter, 1, [Sample("voltage_l1", ts, 231.0)])
    later = _message(
        fleet,
        meter,
        2,
        [Sample("voltage_l1", ts, 231.0), Sample("frequency", ts, 50.0, good=False)],
    )
    writer = make_writer(db_url, clock)
    try:
        assert writer.store(make_batch(clock, first)).points_stored == 1
        # the stored point is a redelivery; the new metric is stored beside it
        assert writer.store(make_batch(clock, later)).points_stored == 1
    finally:
        writer.conn.close()
    assert count(db_url, "SELECT count(*) FROM telemetry_rows") == 1
    assert [(m, v, g) for m, _, v, g in _points(db_url, meter)] == [
        ("frequency", 50.0, False),
        ("voltage_l1", 231.0, True),
    ]
    assert count(db_url, "SELECT count(*) FROM telemetry_conflicts") == 0


def test_a_point_offered_twice_in_one_batch_keeps_the_first_and_records_the_conflict(
    db_url, clock, unique_id
):
    fleet = register_fleet(db_url, gateway=unique_id)
    meter = fleet.meters[0]
    ts = clock.now_ms() - 5000
    one = _message(fleet, meter, 1, [Sample("voltage_l1", ts, 231.0)])
    two = _message(
        fleet, meter, 2, [Sample("voltage_l1", ts, 299.0), Sample("voltage_l2", ts, 232.0)]
    )
    writer = make_writer(db_url, clock)
    try:
        result = writer.store(make_batch(clock, one, two))
    finally:
        writer.conn.close()
    assert (result.points_offered, result.points_stored) == (3, 2)
    assert [(m, v) for m, _, v, _ in _points(db_url, meter)] == [
        ("voltage_l1", 231.0),
        ("voltage_l2", 232.0),
    ]
    with psycopg.connect(db_url) as conn:
        conflicts = conn.execute(
            "SELECT device_id, metric, kept_value, offered_value FROM telemetry_conflicts"
        ).fetchall()
    assert conflicts == [(meter, "voltage_l1", 231.0, 299.0)]


def test_grouping_keeps_a_repeated_point_apart():
    samples = (Sample("a", 1, 1.0), Sample("b", 1, 2.0), Sample("a", 1, 3.0), Sample("a", 2, 4.0))
    grouped = group_samples([("d", samples)])
    assert {k: sorted(v) for k, v in grouped.rows.items()} == {
        ("d", 1): ["a", "b"],
        ("d", 2): ["a"],
    }
    assert grouped.points == 3
    assert grouped.repeats == [("d", [Sample("a", 1, 3.0)])]


def test_a_metric_set_created_by_a_rolled_back_batch_is_not_reused(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    meter = fleet.meters[0]
    writer = make_writer(db_url, clock)
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            with writer.conn.transaction():
                writer._metric_set_ids({("frequency", "voltage_l3")})
                writer.conn.execute("SET LOCAL statement_timeout = 1")
                writer.conn.execute("SELECT pg_sleep(1)")  # the batch fails after the set
        writer.rollback()
        assert ("frequency", "voltage_l3") not in writer.metric_sets
        ts = clock.now_ms() - 1000
        stored = writer.store(
            make_batch(
                clock,
                _message(
                    fleet,
                    meter,
                    1,
                    [Sample("voltage_l3", ts, 229.0), Sample("frequency", ts, 49.9)],
                ),
            )
        )
    finally:
        writer.conn.close()
    assert stored.points_stored == 2
    assert [(m, v) for m, _, v, _ in _points(db_url, meter)] == [
        ("frequency", 49.9),
        ("voltage_l3", 229.0),
    ]


def test_an_insert_through_the_view_refuses_a_stored_point(db, db_url, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)  # the dsn of a connection has no password
    db.execute("SELECT ensure_telemetry_partitions(current_date - 1, current_date)")
    insert = (
        "INSERT INTO telemetry (device_id, metric, ts, value) "
        "VALUES (%s, 'frequency', date_trunc('hour', now()), %s)"
    )
    db.execute(insert, (fleet.meters[0], 50.0))
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(insert, (fleet.meters[0], 51.0))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(insert, ("no-such-meter", 50.0))


def _register_at_version_104(url: str, *, gateway: str) -> list[str]:
    """Two meters in the registry as version 104 had it: the fleet service writes today's
    schema (columns added later, by 0301), so this upgrade test writes its rows itself."""
    meters = [f"{gateway}-m0", f"{gateway}-m1"]
    with psycopg.connect(url, autocommit=True) as conn:
        site = conn.execute(
            "WITH j AS (INSERT INTO jurisdictions (code, name) VALUES ('j', 'J') RETURNING id),"
            " u AS (INSERT INTO user_units (name) VALUES ('U') RETURNING id)"
            " INSERT INTO sites (user_unit_id, jurisdiction_id, name, latitude, longitude, tier)"
            " SELECT u.id, j.id, 'S', 31.2, 121.5, 'city' FROM j, u RETURNING id"
        ).fetchone()[0]
        for meter in meters:
            conn.execute(
                "INSERT INTO devices (id, kind, model, site_id)"
                " VALUES (%s, 'energy_meter', 'm', %s)",
                (meter, site),
            )
    return meters


def test_migration_0105_carries_the_points_of_one_row_per_point_over(empty_db_url, unique_id):
    migrate(empty_db_url, up_to=104)
    fleet = Fleet(unique_id, tuple(_register_at_version_104(empty_db_url, gateway=unique_id)), "")
    old = [
        (fleet.meters[0], "voltage_l1", "2026-01-05T08:00:00Z", 230.5, True),
        (fleet.meters[0], "power_total", "2026-01-05T08:00:00Z", 7.25, False),
        (fleet.meters[0], "voltage_l1", "2026-01-05T08:00:01Z", 230.75, True),
        (fleet.meters[1], "frequency", "2026-01-06T09:30:00Z", 50.0, True),
    ]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("SELECT ensure_telemetry_partitions('2026-01-05', '2026-01-06')")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO telemetry (device_id, metric, ts, value, good) "
                "VALUES (%s, %s, %s, %s, %s)",
                old,
            )
    assert migrate(empty_db_url)[0].version == 105
    with psycopg.connect(empty_db_url) as conn:
        now = conn.execute(
            "SELECT device_id, metric, to_char(ts AT TIME ZONE 'UTC', "
            '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\'), value, good FROM telemetry ORDER BY 1, 3, 2'
        ).fetchall()
        rows = conn.execute("SELECT count(*) FROM telemetry_rows").fetchone()
        pending = conn.execute("SELECT count(*) FROM telemetry_hourly_pending").fetchone()
    assert sorted(now) == sorted(old)
    assert rows == (3,)  # two instants of the first meter, one of the second
    assert pending == (2,)  # the hours of the meters' rollup metrics, rolled up next upkeep
