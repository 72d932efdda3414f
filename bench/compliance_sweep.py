"""Benchmark: the compliance sweep (rules M1, M2, M5, M6) over N elevators with a year of records.

    vigil bench compliance_sweep [--sizes 100000,300000,1000000] [--visits 24] [--repeat 3]

Starts a private PostgreSQL (vigil.services, fsync off) and, for each size, a fresh database:
N elevators on N/100 sites (at least 1,000) registered through the fleet service, each with a
year of verified maintenance records generated with generate_series (one visit every 15 days,
tiers rotating half-monthly / quarterly / semi-annual / annual, full TSG T5002 checklists), a
drill and a recent alarm self-test. Records and verdicts are bulk-loaded in slices on two
connections, without foreign-key checks or row triggers (consistent by construction); the
generation is not what is measured. 1% of
the elevators stopped being maintained 20 days ago. The last visits are spread over 14 days, so
each day about 1/14 (7 %) of the fleet changes state (ok -> due_soon). It then times, as one
engine runs them (shard by shard, each shard one transaction; docs/compliance.md):

* ``first``: the first sweep (full: creates the escalation row of every elevator and raises the
  1% overdue alarms);
* ``steady``: incremental sweeps a minute later with nothing due (the engine's cost every
  ``sweep_interval_s``), best and median of ``--repeat``;
* ``day``: the incremental sweep one day later, with its ~7 % transitions;
* ``check``: a full sweep at that same instant (the daily check), which must find nothing;
* ``findings``: the M8/M10/M11/M12 checks (run once per sweep cycle).

Each line gives the cost per lift and per transition, so that linearity shows across sizes.
Aim: 1,000,000 lifts, steady sweep < 5 s, a day's transitions < 20 s. The machine has 2 cores
shared with other work, so figures are noisy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from compliance.maintenance import flows, service
from compliance.maintenance.models import SweepResult, Tier, checklist
from fleet.factory import FleetFactory
from vigil.db import migrate
from vigil.progress import counted
from vigil.services import PostgresServer

NOW = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
# memory as a national platform's database server would have (the defaults are a laptop's); the
# machine has 24 GB
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "effective_cache_size": "16GB",
    "max_wal_size": "16GB",
}
_LOADERS = 2  # parallel connections generating records (the machine has 2 cores)
_SLICES = 8  # slices of the fleet they share


def _sites(elevators: int) -> int:
    return max(1000, elevators // 100)


def _register(conn: psycopg.Connection, url: str, *, elevators: int) -> None:
    """The registry through the fleet service: N/100 sites (at least 1,000), one firm with 200
    technicians, ``elevators`` lifts under its contract (ids 1.. match the set-based rows)."""
    sites = _sites(elevators)
    fleet = FleetFactory(conn, at=NOW)
    fleet.jurisdiction("bench", name="Bench")
    fleet.bulk("user_units", ({"name": f"uu-{g}"} for g in range(1, sites + 1)))
    fleet.bulk(
        "sites",
        (
            {
                "code": f"site-{g}",
                "user_unit": f"uu-{g}",
                "jurisdiction": "bench",
                "name": f"site-{g}",
                "latitude": 31.2,
                "longitude": 121.5,
                "tier": "city",
            }
            for g in range(1, sites + 1)
        ),
    )
    fleet.firm("BenchCare", licence_no="L-1", licence_expires_on=date(2030, 1, 1))
    fleet.bulk(
        "technicians",
        (
            {
                "firm": "BenchCare",
                "name": f"t{g}",
                "certificate_no": f"C-{g}",
                "certificate_expires_on": "2030-01-01",
            }
            for g in range(1, 201)
        ),
    )
    registered = NOW - timedelta(days=400)

    def devices(numbers: range) -> Iterator[dict[str, object]]:
        for g in numbers:
            yield {
                "id": f"lift-{g}",
                "kind": "elevator",
                "model": "TL-1000",
                "site": f"site-{1 + g % sites}",
                "registered_at": registered,
            }

    def contracts(numbers: range) -> Iterator[dict[str, object]]:
        for g in numbers:
            yield {
                "device": f"lift-{g}",
                "firm": "BenchCare",
                "starts_on": registered.date(),
                "ends_on": date(2030, 1, 1),
            }

    def write(kind: str, records: Iterator[dict[str, object]]) -> None:
        with psycopg.connect(url, autocommit=True) as own:
            FleetFactory(own, at=NOW).bulk(kind, records)

    # halves of the fleet on two connections: the fleet service validates each record in Python
    half = elevators // 2 + 1
    parts = [range(1, half), range(half, elevators + 1)]
    with ThreadPoolExecutor(max_workers=_LOADERS) as pool:
        for kind, make in (("devices", devices), ("contracts", contracts)):
            list(pool.map(lambda numbers, kind=kind, make=make: write(kind, make(numbers)), parts))


_RECORDS_AND_VERDICTS = """
    WITH r AS (
        -- one visit every 15 days for a year; 1%% stopped being maintained 20 days ago
        INSERT INTO maintenance_records (device_id, technician_id, firm_id, tier,
               claimed_start, claimed_end, checklist_done, checklist_total, credited_tier,
               recorded_by, recorded_at)
        SELECT 'lift-' || g, 1 + g %% 200, 1, x.tier, x.visit, x.visit + interval '1 hour',
               CASE x.tier WHEN 'half_monthly' THEN %(hm)s::text[]
                           WHEN 'quarterly' THEN %(q)s::text[]
                           WHEN 'semi_annual' THEN %(sa)s::text[] ELSE %(an)s::text[] END,
               CASE x.tier WHEN 'half_monthly' THEN 31 WHEN 'quarterly' THEN 44
                           WHEN 'semi_annual' THEN 59 ELSE 76 END,
               x.tier, 'bench', x.visit + interval '2 hours'
        FROM generate_series(%(first)s::int, %(last)s::int) g
        CROSS JOIN generate_series(0, %(k)s - 1) k
        CROSS JOIN LATERAL (
            SELECT %(now)s - make_interval(days => 1 + g %% 14 + k * 15
                                           + CASE WHEN g %% 100 = 0 THEN 19 ELSE 0 END)
                   - interval '3 hours' AS visit,
                   CASE WHEN (g + k) %% 24 = 0 THEN 'annual'
                        WHEN (g + k) %% 12 = 0 THEN 'semi_annual'
                        WHEN (g + k) %% 6 = 0 THEN 'quarterly'
                        ELSE 'half_monthly' END AS tier
        ) x
        RETURNING id, device_id, claimed_start, recorded_at
    )
    INSERT INTO maintenance_verdicts (record_id, device_id, verdict, onsite, onsite_minutes,
           evidence, rule_values, decided_at)
    SELECT id, device_id, 'verified',
           tstzrange(claimed_start + interval '5 minutes', claimed_start + interval '50 minutes'),
           45, '{"intervals": []}', '{"min_onsite_minutes": 20}', recorded_at
    FROM r
"""

_DRILLS_AND_SELFTESTS = (
    """INSERT INTO rescue_drills (device_id, held_at, recorded_by, recorded_at)
       SELECT 'lift-' || g, %(now)s - make_interval(days => g %% 300), 'bench', %(now)s
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO device_state (device_id, metric, value, ts)
       SELECT 'lift-' || g, 'alarm_selftest_at',
              extract(epoch FROM %(now)s - interval '1 hour'), %(now)s
       FROM generate_series(1, %(n)s) g""",
)


def _bulk_load(url: str, statement: str, params: dict[str, object] | None) -> None:
    """Run one generating statement on a connection of its own, as a bulk load: the rows are
    consistent by construction, so foreign-key checks and row triggers (the recheck queue: the
    first sweep is a full one) are skipped."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)


def _generate(conn: psycopg.Connection, url: str, *, elevators: int, visits: int) -> dict[str, int]:
    """Estate, records, verdicts, drills and self-tests: the registry through the fleet service,
    the rest set-based, the records and verdicts in slices loaded on parallel connections."""
    params = {
        "n": elevators,
        "k": visits,
        "now": NOW,
        "hm": checklist(Tier.HALF_MONTHLY),
        "q": checklist(Tier.QUARTERLY),
        "sa": checklist(Tier.SEMI_ANNUAL),
        "an": checklist(Tier.ANNUAL),
    }
    _register(conn, url, elevators=elevators)
    # secondary indexes of the loaded tables are built after the load, as a bulk load does: a
    # GiST insert costs more the larger the index (250 us a verdict at 300,000 lifts)
    secondary = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes i "
        "WHERE tablename IN ('maintenance_records', 'maintenance_verdicts') "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
    ).fetchall()
    for name, _ in secondary:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    deferred = [str(definition) for _, definition in secondary]
    slice_size = max(1, elevators // _SLICES)
    loads = [
        (_RECORDS_AND_VERDICTS, params | {"first": g, "last": min(elevators, g + slice_size - 1)})
        for g in range(1, elevators + 1, slice_size)
    ] + [(statement, params) for statement in _DRILLS_AND_SELFTESTS]
    with ThreadPoolExecutor(max_workers=_LOADERS) as pool:
        done = pool.map(lambda load: _bulk_load(url, *load), loads)
        for _ in counted(done, desc="generating", unit="slice", total=len(loads)):
            pass
        built = pool.map(lambda index: _bulk_load(url, index, None), deferred)
        for _ in counted(built, desc="indexing", unit="index", total=len(deferred)):
            pass
    conn.execute("ANALYZE")
    counts = {}
    for table in ("devices", "maintenance_records", "maintenance_verdicts"):
        counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return counts


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def _sweep(conn: psycopg.Connection, *, now: datetime, shards: int, full: bool) -> SweepResult:
    """One engine's sweep of every shard (each its own transaction)."""
    total = SweepResult(examined=0)
    every = timedelta(0) if full else timedelta(days=10_000)
    for shard in range(shards):
        total.add(flows.sweep_shard(conn, now=now, shard=shard, shards=shards, full_every=every))
    return total


def _line(name: str, seconds: float, *, lifts: int, result: SweepResult | None = None) -> str:
    text = f"{name:<9}: {seconds:8.3f} s  {seconds / lifts * 1e6:7.2f} us/lift"
    if result is not None:
        moved = len(result.transitions)
        per = f"{seconds / moved * 1e3:6.3f} ms/transition" if moved else "no transition"
        looked = "all" if result.examined in (None, 0) else f"{result.examined:,}"
        text += f"  {moved:,} transitions ({moved / lifts:.1%}), {per}; examined {looked}"
    return text


def _one_size(url: str, *, elevators: int, visits: int, repeat: int) -> None:
    """Generate ``elevators`` lifts in the empty database at ``url`` and time the sweeps."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        print(f"== {elevators:,} elevators x {visits} visits", flush=True)
        seconds, counts = _timed(_generate, conn, url, elevators=elevators, visits=visits)
        print(
            f"generate : {seconds:8.1f} s  {counts['devices']:,} elevators, "
            f"{counts['maintenance_records']:,} records, "
            f"{counts['maintenance_verdicts']:,} verdicts",
            flush=True,
        )
        seconds, _ = _timed(service.refresh_all_clocks, conn, at=NOW)
        print(_line("clocks", seconds, lifts=elevators), flush=True)
        conn.execute("ANALYZE")
        shards, _ = service.sweep_shards(conn)
        seconds, result = _timed(_sweep, conn, now=NOW, shards=shards, full=True)
        print(_line("first", seconds, lifts=elevators, result=result), flush=True)
        conn.execute("ANALYZE maintenance_escalations")
        steady = []
        for n in range(repeat):
            seconds, result = _timed(
                _sweep, conn, now=NOW + timedelta(minutes=1 + n), shards=shards, full=False
            )
            assert not result.transitions
            steady.append(seconds)
        print(
            _line("steady", min(steady), lifts=elevators)
            + f"  best of {repeat}, median {statistics.median(steady):.3f} s, nothing due",
            flush=True,
        )
        day = NOW + timedelta(days=1)
        seconds, result = _timed(_sweep, conn, now=day, shards=shards, full=False)
        print(_line("day", seconds, lifts=elevators, result=result), flush=True)
        seconds, check = _timed(_sweep, conn, now=day, shards=shards, full=True)
        print(
            _line("check", seconds, lifts=elevators, result=check)
            + f"; missed by the incremental sweeps: {len(check.missed)}",
            flush=True,
        )
        seconds, found = _timed(flows.check_findings_once, conn, now=day)
        print(
            _line("findings", seconds, lifts=elevators)
            + f"  {found.findings_opened:,} opened, {found.findings_closed:,} closed",
            flush=True,
        )


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="vigil bench compliance_sweep")
    parser.add_argument("--sizes", default="100000", help="comma-separated elevator counts")
    parser.add_argument("--visits", type=int, default=24, help="records per elevator")
    parser.add_argument("--repeat", type=int, default=3, help="steady-state sweeps")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-pg-"))
    scratch.chmod(0o755)  # PostgreSQL runs as another user when we are root
    server = PostgresServer(scratch / "data", durable=False, settings=SERVER_SETTINGS)
    server.start()
    try:
        for size in sizes:
            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute("DROP DATABASE IF EXISTS bench")
                admin.execute("CREATE DATABASE bench")
            _one_size(server.url("bench"), elevators=size, visits=args.visits, repeat=args.repeat)
        print(
            "note: one engine, 2 shared cores, noisy; database on the same machine; "
            + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(scratch, ignore_errors=True)  # a million lifts leave 40 GB behind
    return 0
