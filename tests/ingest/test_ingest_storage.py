"""Storage paths: partitions ahead and retention, hourly rollups, the same queries on both paths."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from ingest import flows, scheduled, service
from tests.ingest.conftest import ingest_settings, make_batch, make_writer, register_fleet
from vigil import wire
from vigil.catalog import METRICS, DeviceKind
from vigil.clock import from_ms
from vigil.db import has_timescaledb, stalled_jobs
from vigil.wire import Sample, TelemetryBatch

NO_TIMESCALE = (
    "this run uses plain PostgreSQL; `make test` runs the storage tests again on a TimescaleDB "
    "server (VIGIL_TEST_TIMESCALEDB=1, scripts/timescaledb-tests.sh)"
)
HOUR = 3_600_000


@pytest.fixture
def plain(db):
    if has_timescaledb(db):
        pytest.skip("this database uses the TimescaleDB path; the plain path is not active")
    return db


def _partitions(conn) -> list[str]:
    return [
        r["relname"]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry_rows'::regclass ORDER BY 1"
        ).fetchall()
    ]


def test_partitions_are_created_ahead_and_dropped_after_retention(plain, db_url, clock):
    today = clock.now().date()
    settings = ingest_settings(partitions_ahead_days=3, retention_days=100)
    old = today - timedelta(days=150)
    plain.execute("SELECT ensure_telemetry_partitions(%s, %s)", (old, old + timedelta(days=1)))
    with psycopg.connect(db_url) as conn:
        upkeep = flows.maintain_storage(conn, today=today, settings=settings)
    names = _partitions(plain)
    expected = [f"telemetry_rows_p{(today + timedelta(days=d)):%Y%m%d}" for d in range(-1, 4)]
    assert names == expected
    assert upkeep.partitions_created == 5
    assert set(upkeep.partitions_dropped) == {
        f"telemetry_rows_p{old:%Y%m%d}",
        f"telemetry_rows_p{old + timedelta(days=1):%Y%m%d}",
    }
    brin = plain.execute(
        "SELECT count(*) AS n FROM pg_indexes "
        "WHERE tablename = 'telemetry_rows' AND indexdef ~* 'brin'"
    ).fetchone()
    assert brin["n"] == 1


def test_rollup_metrics_match_the_catalogue(db):
    rolled = {
        DeviceKind.ENERGY_METER,
        DeviceKind.WATER_METER,
        DeviceKind.LIGHT_POLE,
        DeviceKind.HIGH_MAST,
    }
    for kind, metrics in METRICS.items():
        for name in metrics:
            row = db.execute("SELECT is_rollup_metric(%s) AS r", (name,)).fetchone()
            assert row["r"] is (kind in rolled), (kind, name)
    assert db.execute("SELECT is_rollup_metric('lamp_3_power') AS r").fetchone()["r"]


def test_hourly_rollups_follow_late_data_and_skip_bad_values(plain, db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    meter = fleet.meters[0]
    hour = (clock.now_ms() // HOUR - 2) * HOUR  # two hours ago, on the hour

    def msg(seq: int, *samples: Sample) -> tuple[str, bytes]:
        return wire.encode(TelemetryBatch(fleet.gateway, meter, seq, samples))

    writer = make_writer(db_url, clock)
    settings = ingest_settings()
    try:
        writer.store(
            make_batch(
                clock,
                msg(
                    1,
                    Sample("power_total", hour + 1000, 10.0),
                    Sample("power_total", hour + 2000, 30.0),
                    Sample("power_total", hour + 3000, 1e6, good=False),
                    Sample("power_total", hour + HOUR + 5, 7.0),
                ),
            )
        )
        with psycopg.connect(db_url) as conn:
            assert (
                flows.maintain_storage(
                    conn, today=clock.now().date(), settings=settings
                ).hours_rolled_up
                == 2
            )
            rows = service.hourly_rollups(
                conn,
                device_id=meter,
                metric="power_total",
                start=from_ms(hour),
                end=from_ms(hour + 2 * HOUR),
            )
        assert [r[1:] for r in rows] == [
            (2, 10.0, 30.0, 20.0, 10.0, 30.0),
            (1, 7.0, 7.0, 7.0, 7.0, 7.0),
        ]
        # late data for an hour already rolled up is rolled up again
        writer.store(make_batch(clock, msg(2, Sample("power_total", hour + 500, 2.0))))
        with psycopg.connect(db_url) as conn:
            assert (
                flows.maintain_storage(
                    conn, today=clock.now().date(), settings=settings
                ).hours_rolled_up
                == 1
            )
            rows = service.hourly_rollups(
                conn,
                device_id=meter,
                metric="power_total",
                start=from_ms(hour),
                end=from_ms(hour + HOUR),
            )
            raw = service.telemetry_between(
                conn,
                device_id=meter,
                metric="power_total",
                start=from_ms(hour),
                end=from_ms(hour + HOUR),
            )
        assert [r[1:] for r in rows] == [(3, 2.0, 30.0, 14.0, 2.0, 30.0)]
        assert [(r[1], r[2]) for r in raw] == [
            (2.0, True),
            (10.0, True),
            (30.0, True),
            (1e6, False),
        ]
    finally:
        writer.conn.close()


def test_elevators_are_not_rolled_up(plain, db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    writer = make_writer(db_url, clock)
    try:
        writer.store(
            make_batch(
                clock,
                wire.encode(
                    TelemetryBatch(
                        fleet.gateway,
                        fleet.elevator,
                        1,
                        (Sample("trip_count", clock.now_ms(), 5.0),),
                    )
                ),
            )
        )
    finally:
        writer.conn.close()
    assert plain.execute("SELECT count(*) AS n FROM telemetry_hourly_pending").fetchone()["n"] == 0
    assert plain.execute("SELECT count(*) AS n FROM telemetry").fetchone()["n"] == 1


def test_storage_size_is_measured(db_url, clock, unique_id):
    fleet = register_fleet(db_url, gateway=unique_id)
    writer = make_writer(db_url, clock)
    try:
        writer.store(
            make_batch(
                clock,
                wire.encode(
                    TelemetryBatch(
                        fleet.gateway,
                        fleet.meters[0],
                        1,
                        tuple(Sample("voltage_l1", clock.now_ms() - i, 230.0) for i in range(500)),
                    )
                ),
            )
        )
    finally:
        writer.conn.close()
    with psycopg.connect(db_url) as conn:
        size, rows = service.telemetry_storage(conn)
    assert rows == 500
    assert size > 0


def test_timescaledb_path(db):
    if not has_timescaledb(db):
        pytest.skip(NO_TIMESCALE)
    jobs = {
        r["proc_name"]
        for r in db.execute(
            "SELECT proc_name FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'telemetry_rows'"
        ).fetchall()
    }
    # roll-ups are a table refreshed from the invalidation log on both paths, not a continuous
    # aggregate that never shows the current hour nor re-rolls data older than its window
    assert jobs == {"policy_compression", "policy_retention"}


def test_rollups_cover_the_current_hour_and_late_data_of_any_accepted_age(
    db, db_url, clock, unique_id
):
    fleet = register_fleet(db_url, gateway=unique_id)
    clock.set(clock.now() + timedelta(minutes=30))  # mid-hour: the hour is still going on
    now = clock.now_ms()
    current = now // HOUR * HOUR
    late = current - 80 * 24 * HOUR  # 80 days late: the wire accepts up to 90
    writer = make_writer(db_url, clock)
    try:
        for seq, hour in enumerate((current, late), start=1):
            first = hour if hour != current else now - 2000
            writer.store(
                make_batch(
                    clock,
                    wire.encode(
                        TelemetryBatch(
                            fleet.gateway,
                            fleet.meters[0],
                            seq,
                            (
                                Sample("power_total", first, 10.0),
                                Sample("power_total", first + 1000, 30.0),
                            ),
                        )
                    ),
                )
            )
        with psycopg.connect(db_url) as conn:
            upkeep = flows.maintain_storage(
                conn, today=clock.now().date(), settings=ingest_settings()
            )
        assert upkeep.hours_rolled_up == 2
        for hour in (current, late):
            rows = service.hourly_rollups(
                db,
                device_id=fleet.meters[0],
                metric="power_total",
                start=from_ms(hour),
                end=from_ms(hour + HOUR),
            )
            assert [(r["samples"], r["min_value"], r["max_value"]) for r in rows] == [
                (2, 10.0, 30.0)
            ]
        # more late data for an hour already rolled up: rolled up again
        writer.store(
            make_batch(
                clock,
                wire.encode(
                    TelemetryBatch(
                        fleet.gateway,
                        fleet.meters[0],
                        3,
                        (Sample("power_total", late + 5000, 50.0),),
                    )
                ),
            )
        )
    finally:
        writer.conn.close()
    with psycopg.connect(db_url) as conn:
        flows.maintain_storage(conn, today=clock.now().date(), settings=ingest_settings())
    rows = service.hourly_rollups(
        db,
        device_id=fleet.meters[0],
        metric="power_total",
        start=from_ms(late),
        end=from_ms(late + HOUR),
    )
    assert [(r["samples"], r["max_value"]) for r in rows] == [(3, 50.0)]


def _seed_old_chunks(db, device: str, clock) -> None:
    # straight through the view: ingest refuses data this old, retention must still drop it
    for days in (400, 10):
        db.execute(
            "INSERT INTO telemetry (device_id, metric, ts, value) "
            "VALUES (%s, 'power_total', %s, %s)",
            (device, clock.now() - timedelta(days=days), float(days)),
        )


def test_ingest_runs_the_timescaledb_jobs_the_scheduler_does_not(db, db_url, clock, unique_id):
    if not has_timescaledb(db):
        pytest.skip(NO_TIMESCALE)
    fleet = register_fleet(db_url, gateway=unique_id)
    _seed_old_chunks(db, fleet.meters[0], clock)
    db.execute("SELECT _timescaledb_functions.stop_background_workers()")
    try:
        db.execute(
            "SELECT alter_job(job_id, next_start => now() - interval '2 days') "
            "FROM timescaledb_information.jobs WHERE hypertable_name = 'telemetry_rows'"
        )
        with psycopg.connect(db_url) as conn:
            stalled = stalled_jobs(conn, hypertable="telemetry_rows")
            assert {j.name for j in stalled} == {"policy_compression", "policy_retention"}
            upkeep = flows.maintain_storage(
                conn, today=clock.now().date(), settings=ingest_settings()
            )
        assert {j.name for j in upkeep.jobs_stalled} == {"policy_compression", "policy_retention"}
    finally:
        db.execute("SELECT _timescaledb_functions.start_background_workers()")
    kept = db.execute("SELECT value FROM telemetry ORDER BY ts").fetchall()
    assert [r["value"] for r in kept] == [10.0]  # retention dropped the 400-day-old chunk
    compressed = db.execute(
        "SELECT count(*) AS n FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'telemetry_rows' AND is_compressed"
    ).fetchone()
    assert compressed["n"] == 1  # the 10-day-old chunk, past compress_after_days


def test_failing_timescaledb_jobs_are_reported(db, db_url, unique_id):
    if not has_timescaledb(db):
        pytest.skip(NO_TIMESCALE)
    db.execute(
        "SELECT alter_job(job_id, next_start => now()) "
        "FROM timescaledb_information.jobs WHERE hypertable_name = 'telemetry_rows'"
    )
    # the scheduler (a real background process) runs them now: wait for its verdict
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(600):
            outcome = conn.execute(
                "SELECT array_agg(DISTINCT s.last_run_status) FROM timescaledb_information.jobs j "
                "JOIN timescaledb_information.job_stats s USING (job_id) "
                "WHERE j.hypertable_name = 'telemetry_rows' AND s.total_runs > 0 "
                "HAVING count(*) = 2"
            ).fetchone()
            if outcome:
                break
            conn.execute("SELECT pg_sleep(0.1)")  # polling a real process, not a fixed wait
        assert outcome, "the scheduler did not run the jobs within 60 s"
        if outcome[0] == ["Success"]:
            pytest.skip("TimescaleDB's scheduler works on this PostgreSQL: nothing to report")
        stalled = stalled_jobs(conn, hypertable="telemetry_rows")
    assert {j.name for j in stalled} == {"policy_compression", "policy_retention"}
    assert all(j.problem.startswith("failed: ") for j in stalled)


def test_upkeep_runs_in_one_worker_at_a_time(plain, db_url, clock):
    settings = ingest_settings(partitions_ahead_days=2)
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (scheduled.UPKEEP_LOCK,))
        assert (
            scheduled.upkeep_once(
                database_url=db_url, settings=settings, clock=clock, apply_policies=True
            )
            is None
        )
        assert _partitions(plain) == []
        other.execute("SELECT pg_advisory_unlock(%s)", (scheduled.UPKEEP_LOCK,))
    upkeep = scheduled.upkeep_once(
        database_url=db_url, settings=settings, clock=clock, apply_policies=True
    )
    assert upkeep is not None and upkeep.partitions_created == 4
