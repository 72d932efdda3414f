"""Benchmark: the console's reads on a large telemetry store (100 M points by default).

    vigil bench telemetry_scale [--points 100000000] [--meters 500] [--elevators 2000]
                                [--samples 20] [--timescaledb]

Starts a private PostgreSQL (fsync off; ``--timescaledb`` loads TimescaleDB), migrates it and
registers energy meters and elevators (the elevators with a year of maintenance records and a
first compliance sweep, as ``bench/compliance_sweep.py`` makes them, so the due list has rows).
It then times, on the API's own query functions, as a firm manager would call them:

* ``chart 24 h``: one meter's ``power_total`` over 24 h in 5-minute buckets
  (``fleet.service.telemetry_buckets``, the console's device chart);
* ``chart 7 d``: the same over 7 days in hourly buckets;
* ``due list``: the overdue elevators (``compliance.maintenance.service.list_due``, limit 200);

first with one day of telemetry stored (the baseline), then again after generating older
telemetry up to ``--points`` points (500 meters x 10 metrics a minute: 100 M points are two
weeks) (set-based, in the layout ingest writes: one row per meter and
timestamp holding its 10 metrics, migration 0105), and prints the median and p95 of each over
``--samples`` random meters, the ratio after / before, and the bytes per stored point.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

METRICS = (
    "current_l1",
    "current_l2",
    "current_l3",
    "frequency",
    "import_energy",
    "power_factor",
    "power_total",
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
)  # sorted: the order of a metric set
STEP_S = 60  # one reading per meter per minute


def _compliance_sweep_module():
    path = Path(__file__).with_name("compliance_sweep.py")
    spec = importlib.util.spec_from_file_location("bench_compliance_sweep", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _register_meters(conn: psycopg.Connection, *, meters: int) -> None:
    """The meters, through the fleet service, at the sites compliance_sweep registered."""
    from fleet.factory import FleetFactory

    fleet = FleetFactory(conn, at=NOW)
    registered = NOW - timedelta(days=400)
    fleet.bulk(
        "devices",
        (
            {
                "id": f"meter-{g}",
                "kind": "energy_meter",
                "model": "DTSU666",
                "site": f"site-{1 + g % 1000}",
                "registered_at": registered,
            }
            for g in range(1, meters + 1)
        ),
    )
    fleet.bulk(
        "contracts",
        (
            {
                "device": f"meter-{g}",
                "firm": "BenchCare",
                "starts_on": registered.date(),
                "ends_on": "2030-01-01",
            }
            for g in range(1, meters + 1)
        ),
    )
    conn.execute(
        "INSERT INTO telemetry_metric_sets (metrics) VALUES (%s) ON CONFLICT DO NOTHING",
        (list(METRICS),),
    )


def _generate(conn: psycopg.Connection, *, meters: int, steps: int, first_step: int = 0) -> None:
    """Telemetry of every meter for steps [first_step, steps), one day per statement."""
    per_day = 86_400 // STEP_S
    end = NOW - timedelta(minutes=1)
    for day_start in range(first_step, steps, per_day):
        day_end = min(day_start + per_day, steps)
        newest = end - timedelta(seconds=day_start * STEP_S)
        oldest = end - timedelta(seconds=(day_end - 1) * STEP_S)
        conn.execute("SELECT ensure_telemetry_partitions(%s, %s)", (oldest.date(), newest.date()))
        conn.execute(
            """INSERT INTO telemetry_rows (device_ref, set_id, ts, "values")
               SELECT d.ref, s.id, %(end)s - make_interval(secs => k * %(step)s),
                      ARRAY[10 + random(), 10 + random(), 10 + random(), 50 + random() / 10,
                            100000 - k * 0.1, 0.9 + random() / 20, 7000 + 100 * random(),
                            230 + random(), 230 + random(), 230 + random()]
               FROM devices d
               JOIN telemetry_metric_sets s ON s.metrics = %(metrics)s
               CROSS JOIN generate_series(%(hi)s::integer, %(lo)s::integer, -1) AS k
               WHERE d.kind = 'energy_meter'""",
            {
                "end": end,
                "step": STEP_S,
                "metrics": list(METRICS),
                "lo": day_start,
                "hi": day_end - 1,
            },
        )
        conn.commit()
        print(f"  ... {day_end * meters * len(METRICS):,} points", flush=True)


async def _time_reads(url: str, *, meters: list[str], samples: int) -> dict[str, list[float]]:
    from api.auth.models import Principal, Role
    from api.scope import device_scope, device_scope_args
    from compliance.maintenance import service as maintenance
    from fleet import service as assets

    manager = Principal(
        user_id=1, username="m", display_name="m", role=Role.FIRM_MANAGER, firm_id=1
    )
    timings: dict[str, list[float]] = {"chart 24 h": [], "chart 7 d": [], "due list": []}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for device in random.Random(7).sample(meters, samples):
            for name, span, bucket in (
                ("chart 24 h", timedelta(hours=24), 300),
                ("chart 7 d", timedelta(days=7), 3600),
            ):
                start = time.perf_counter()
                buckets = await assets.telemetry_buckets(
                    conn,
                    **device_scope_args(manager),
                    device_id=device,
                    metric="power_total",
                    start=NOW - span,
                    end=NOW,
                    bucket_s=bucket,
                )
                timings[name].append(time.perf_counter() - start)
                assert buckets, f"no telemetry for {device}"
            start = time.perf_counter()
            scope = device_scope(manager)
            due = await maintenance.list_due(
                conn,
                scope=scope.condition,
                scope_params=scope.params,
                states=("overdue", "lockout_pending"),
                limit=200,
            )
            timings["due list"].append(time.perf_counter() - start)
            assert due, "the due list is empty: the sweep made no overdue elevator"
    return timings


def _summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered) * 1000, p95 * 1000


NOW = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil bench telemetry_scale", description=__doc__)
    parser.add_argument("--points", type=int, default=100_000_000)
    parser.add_argument("--meters", type=int, default=500)
    parser.add_argument("--elevators", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=20, help="meters timed per query")
    parser.add_argument("--timescaledb", action="store_true")
    args = parser.parse_args(argv)

    from ingest import service as ingest_service
    from vigil.db import migrate
    from vigil.services import PostgresServer

    sweep = _compliance_sweep_module()
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-scale-"))
    scratch.chmod(0o755)
    server = PostgresServer(scratch / "pg", durable=False, timescaledb=args.timescaledb)
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE vigil")
        url = server.url("vigil")
        migrate(url)
        steps = args.points // (args.meters * len(METRICS))
        per_day = 86_400 // STEP_S
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            sweep._generate(conn, elevators=args.elevators, visits=24)
            sweep.flows.sweep(conn, now=sweep.NOW)
            _register_meters(conn, meters=args.meters)
            _generate(conn, meters=args.meters, steps=min(per_day, steps))
            conn.execute("ANALYZE")
            conn.commit()
            print(f"estate and a day of telemetry in {time.perf_counter() - started:.0f} s")
        meters = [f"meter-{i}" for i in range(1, args.meters + 1)]
        before = asyncio.run(_time_reads(url, meters=meters, samples=args.samples))
        with psycopg.connect(url) as conn:
            small_size, small_points = ingest_service.telemetry_storage(conn)
            started = time.perf_counter()
            _generate(conn, meters=args.meters, steps=steps, first_step=per_day)
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE telemetry_rows")
            size, points = ingest_service.telemetry_storage(conn)
            print(f"generated {points:,} points in {time.perf_counter() - started:.0f} s")
        after = asyncio.run(_time_reads(url, meters=meters, samples=args.samples))
        print()
        print(
            f"{'query (ms)':<12} {'median':>8} {'p95':>8}   on {small_points:,} points  "
            f"{'median':>8} {'p95':>8}   on {points:,} points   ratio of medians"
        )
        for name in before:
            b_med, b_p95 = _summary(before[name])
            a_med, a_p95 = _summary(after[name])
            print(
                f"{name:<12} {b_med:8.2f} {b_p95:8.2f}   {'':>{len(f'on {small_points:,} points')}}"
                f"  {a_med:8.2f} {a_p95:8.2f}   {'':>{len(f'on {points:,} points')}}"
                f"   {a_med / b_med:.2f}"
            )
        print(
            f"bytes per stored point: {size / max(points, 1):.1f} "
            f"({size / 2**30:.2f} GiB; {small_size / max(small_points, 1):.1f} at "
            f"{small_points:,} points)"
        )
        return 0
    finally:
        server.stop(mode="immediate")
