"""Rules M1, M2, M5, M6 at scale: incremental sweeps by shard of sites, a full sweep as the check
that they missed nothing, engines sharing the shards, and an engine killed mid-shard."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import psycopg
import pytest

from compliance.log import flows as log_flows
from compliance.log import service as log_service
from compliance.maintenance import flows, service
from compliance.maintenance.models import SweepResult, Tier
from tests.compliance.conftest import PARKED, Estate

SHARDS = 4
NEVER = timedelta(days=10_000)  # full_every for sweeps that must stay incremental


def _spread_estate(estate: Estate, *, sites: int, lifts_per_site: int) -> list[str]:
    """Lifts on several sites (so on several shards), registered on different days."""
    lifts = []
    for s in range(sites):
        site = estate.fleet.site(
            user_unit=estate.user_unit_id,
            jurisdiction=estate.jurisdiction_id,
            name=f"Tower {s}",
            latitude=31.2,
            longitude=121.5,
        )
        for n in range(lifts_per_site):
            lift = f"lift-{s}-{n}"
            registered = estate.registered_at - timedelta(days=(7 * s + 3 * n) % 13)
            estate.fleet.device(
                lift,
                site=site,
                firm=estate.firm_id,
                manufacturer=estate.manufacturer_id,
                gateway=estate.gateway,
                model="TL-1000",
                registered_at=registered,
            )
            estate.car(lift, registered, **PARKED)
            lifts.append(lift)
    return lifts


def _sweep_every_shard(conn: psycopg.Connection, *, now, full_every=NEVER) -> SweepResult:
    total = SweepResult(examined=0)
    for shard in range(SHARDS):
        part = flows.sweep_shard(conn, now=now, shard=shard, shards=SHARDS, full_every=full_every)
        assert not part.skipped
        total.add(part)
    return total


@pytest.fixture
def sharded(estate: Estate) -> Estate:
    service.set_sweep_shards(estate.conn, shards=SHARDS)
    return estate


def test_incremental_sweeps_decide_what_full_sweeps_would_and_look_at_few_lifts(sharded, clock):
    estate = sharded
    lifts = _spread_estate(estate, sites=5, lifts_per_site=6)
    everyone = len(lifts) + 1  # and lift-1 of the estate
    rng = random.Random(22)
    first = _sweep_every_shard(estate.conn, now=clock.now())  # a new generation: full
    assert first.examined == 0 and not first.missed
    looked_at: list[int] = []
    transitions = 0
    for step in range(4 * 60):  # sixty days, every six hours
        clock.advance(timedelta(hours=6))
        now = clock.now()
        if step % 4 == 1:  # a few verified visits a day (rules M1, M2 reset the clocks)
            for lift in rng.sample(lifts, 3):
                start, end = estate.visit(lift, now - timedelta(hours=2))
                tier = rng.choice([Tier.HALF_MONTHLY, Tier.HALF_MONTHLY, Tier.QUARTERLY])
                estate.record(lift, start, end, at=now, tier=tier)
        if step == 100:  # a policy change can move any lift: the next sweeps are full
            service.set_policy(estate.conn, jurisdiction_id=estate.jurisdiction_id, grace_hours=24)
        result = _sweep_every_shard(estate.conn, now=now)
        transitions += len(result.transitions)
        if result.examined is not None:
            looked_at.append(result.examined)
        # the check: a full sweep at the same instant finds nothing left to do
        check = _sweep_every_shard(estate.conn, now=now, full_every=timedelta(0))
        assert check.examined == 0  # it was full
        assert check.transitions == [], (step, [t.device_id for t in check.transitions])
        assert check.missed == []
    assert transitions > everyone  # lifts went overdue, were maintained, locked out, released
    # incremental sweeps looked at a few lifts each, not the fleet
    assert max(looked_at) < everyone
    assert sum(looked_at) / len(looked_at) < everyone / 4
    assert log_flows.verify(estate.conn).ok


def test_a_lockout_only_recommended_waits_for_a_visit_not_for_every_sweep(sharded, clock):
    # rule M6, recommend mode: nothing but a verified visit (or a policy change) moves it on, so
    # incremental sweeps do not look at it again and again (10,000 such lifts at 1% of a million)
    estate = sharded
    estate.fleet.update("jurisdictions", estate.jurisdiction_id, lockout_mode="recommend")
    _sweep_every_shard(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    assert [str(t.state) for t in _sweep_every_shard(estate.conn, now=clock.now()).transitions] == [
        "overdue"
    ]
    clock.advance(timedelta(hours=72))
    moved = _sweep_every_shard(estate.conn, now=clock.now())
    assert [str(t.state) for t in moved.transitions] == ["lockout_recommended"]
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        assert _sweep_every_shard(estate.conn, now=clock.now()).examined == 0
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    estate.record("lift-1", start, end, at=clock.now(), tier=Tier.HALF_MONTHLY)
    released = _sweep_every_shard(estate.conn, now=clock.now())
    assert released.examined == 1
    assert [str(t.state) for t in released.transitions] == ["ok"]
    check = _sweep_every_shard(estate.conn, now=clock.now(), full_every=timedelta(0))
    assert check.transitions == [] and check.missed == []


def test_a_lift_moved_to_another_site_is_swept_by_its_new_shard(sharded, clock):
    # rules M1, M5: the incremental sweep reads the site from the rows it claims (compliance
    # 0215); a move re-queues the lift under its new site and its timer row follows it
    estate = sharded
    old_shard = service.shards_of(estate.conn, device_ids=["lift-1"], shards=SHARDS)
    new_site = None
    for n in range(40):  # a site that hashes to another shard
        site = estate.fleet.site(
            user_unit=estate.user_unit_id, jurisdiction=estate.jurisdiction_id, name=f"New {n}"
        )
        shard = estate.conn.execute(
            "SELECT mod(mod(abs(hashtext(%s::text)), %s), %s) AS s",
            (site, service.SITE_BUCKETS, SHARDS),
        ).fetchone()["s"]
        if {shard} != old_shard:
            new_site = site
            break
    assert new_site is not None
    _sweep_every_shard(estate.conn, now=clock.now())  # full: the sites changed the generation
    code = estate.conn.execute("SELECT code FROM sites WHERE id = %s", (new_site,)).fetchone()
    estate.fleet.update("devices", "lift-1", site=code["code"])
    moved = _sweep_every_shard(estate.conn, now=clock.now())
    assert moved.examined == 1 and moved.transitions == []
    assert service.escalation(estate.conn, device_id="lift-1")["site_id"] == new_site
    clock.advance(timedelta(days=16))
    overdue = _sweep_every_shard(estate.conn, now=clock.now())
    assert [(t.device_id, str(t.state)) for t in overdue.transitions] == [("lift-1", "overdue")]
    check = _sweep_every_shard(estate.conn, now=clock.now(), full_every=timedelta(0))
    assert check.transitions == [] and check.missed == []


def test_a_record_saved_before_its_end_waits_for_the_sweep_in_a_queue_of_its_own(sharded, clock):
    # rules M2, M3: judged once its claimed window has ended; the sweep reads only the records
    # that wait (compliance 0216), and a verdict takes the record out of the queue
    estate = sharded
    _sweep_every_shard(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    start, _ = estate.visit("lift-1", clock.now() - timedelta(minutes=42))
    record, judgement = estate.record(
        "lift-1", start, clock.now() + timedelta(minutes=3), at=clock.now()
    )
    assert judgement is None  # saved 3 minutes before its claimed end

    def waiting() -> list[int]:
        rows = estate.conn.execute("SELECT record_id FROM maintenance_awaiting_verdict").fetchall()
        return [row["record_id"] for row in rows]

    assert waiting() == [record.id]
    early = _sweep_every_shard(estate.conn, now=clock.now())
    assert early.verdicts == 0 and waiting() == [record.id]
    assert [str(t.state) for t in early.transitions] == ["overdue"]
    clock.advance(timedelta(minutes=50))  # the visit's telemetry has ended by now
    judged = _sweep_every_shard(estate.conn, now=clock.now())
    assert judged.verdicts == 1 and waiting() == []
    assert [str(t.state) for t in judged.transitions] == ["ok"]


def test_two_engines_share_the_shards_and_decide_each_transition_once(sharded, db_url, clock):
    estate = sharded
    lifts = _spread_estate(estate, sites=8, lifts_per_site=4)
    _sweep_every_shard(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))  # every lift overdue: rule M5 alarms
    now = clock.now()
    barrier = threading.Barrier(2)
    swept: list[list[int]] = [[], []]
    results: list[SweepResult] = []

    def engine(index: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            order = list(range(SHARDS))
            random.Random(index).shuffle(order)
            for shard in order:
                part = flows.sweep_shard(
                    conn,
                    now=now,
                    shard=shard,
                    shards=SHARDS,
                    full_every=NEVER,
                    not_within=timedelta(minutes=30),
                )
                if not part.skipped:
                    swept[index].append(shard)
                    results.append(part)

    threads = [threading.Thread(target=engine, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # each shard swept by exactly one engine; each lift's transition decided once
    assert sorted(swept[0] + swept[1]) == list(range(SHARDS))
    decided = [t.device_id for r in results for t in r.transitions]
    assert sorted(decided) == sorted([*lifts, "lift-1"])
    alarms = [
        e
        for e in log_service.entries(estate.conn, kind="alarm.raised")
        if e.body["type"].startswith("maintenance.")
    ]
    assert len(alarms) == len(lifts) + 1
    assert log_flows.verify(estate.conn).ok


def test_an_engine_killed_mid_shard_leaves_nothing_applied_and_another_takes_it_over(
    sharded, db_url, clock
):
    estate = sharded
    _spread_estate(estate, sites=6, lifts_per_site=20)
    _sweep_every_shard(estate.conn, now=clock.now())
    clock.advance(timedelta(days=16))
    now = clock.now()
    before = estate.conn.execute(
        "SELECT count(*) AS n FROM maintenance_escalations WHERE state = 'overdue'"
    ).fetchone()["n"]
    entries_before = log_service.head(estate.conn)[0]
    shard = next(
        s
        for s in range(SHARDS)
        if estate.conn.execute(
            "SELECT count(*) AS n FROM devices d WHERE d.kind = 'elevator' "
            "AND mod(mod(abs(hashtext(d.site_id::text)), %s), %s) = %s",
            (service.SITE_BUCKETS, SHARDS, s),
        ).fetchone()["n"]
        > 0
    )
    failure: list[BaseException] = []
    started = threading.Event()
    pid: list[int] = []

    def doomed_engine() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            pid.append(conn.info.backend_pid)
            started.set()
            try:
                flows.sweep_shard(conn, now=now, shard=shard, shards=SHARDS, full_every=NEVER)
            except psycopg.Error as exc:
                failure.append(exc)

    with psycopg.connect(db_url, autocommit=True) as holder:
        # the log's writer lock, held elsewhere: the sweep blocks at its last step, the append
        # of its log entries, with every escalation change of the shard made but uncommitted
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (log_service.LOG_LOCK_KEY,))
        thread = threading.Thread(target=doomed_engine)
        thread.start()
        assert started.wait(30)
        with psycopg.connect(db_url, autocommit=True) as watcher:
            waiting = False
            for _ in range(3000):  # until its transaction waits on the log lock
                waiting = watcher.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted "
                    "AND locktype = 'advisory')",
                    (pid[0],),
                ).fetchone()[0]
                if waiting:
                    break
                threading.Event().wait(0.01)  # another session's lock wait: nothing to await
            assert waiting
            half_done = watcher.execute(
                "SELECT count(*) FROM maintenance_escalations WHERE state = 'overdue'"
            ).fetchone()[0]
            watcher.execute("SELECT pg_terminate_backend(%s)", (pid[0],))  # the engine dies
        thread.join(30)
        holder.execute("ROLLBACK")
    assert failure, "the killed engine's sweep should have failed"
    # nothing of the shard was applied: no state moved, no alarm raised, nothing logged
    assert half_done == before
    after_kill = estate.conn.execute(
        "SELECT count(*) AS n FROM maintenance_escalations WHERE state = 'overdue'"
    ).fetchone()["n"]
    assert after_kill == before
    assert log_service.head(estate.conn)[0] == entries_before
    # another engine takes the shard over and applies it whole, once
    taken = flows.sweep_shard(estate.conn, now=now, shard=shard, shards=SHARDS, full_every=NEVER)
    assert not taken.skipped and taken.transitions
    again = flows.sweep_shard(estate.conn, now=now, shard=shard, shards=SHARDS, full_every=NEVER)
    assert again.transitions == []
    assert log_flows.verify(estate.conn).ok  # the log verifies after the batch
