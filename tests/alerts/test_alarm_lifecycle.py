import asyncio
from datetime import datetime, timedelta

import psycopg
import pytest

from alerts import service
from alerts.models import (
    AlarmNotFound,
    AlarmState,
    AlarmStateError,
    Audience,
    EscalationLevel,
    Severity,
)
from tests.alerts.seed import seed
from vigil import notify


def _raise(conn, world, at, **overrides):
    args = {
        "source_type": "device",
        "source_id": world.city_lift,
        "type": "maintenance_overdue",
        "severity": Severity.MAJOR,
        "message": "half-monthly maintenance overdue",
        "audience": [Audience.FIRM, Audience.USER_UNIT, Audience.MANUFACTURER],
        "at": at,
    }
    args.update(overrides)
    return service.raise_alarm(conn, **args)


def fire_due(db_url: str, *, now: datetime) -> list:
    """Fire due escalation levels as the delivery worker does (async, its own connection)."""

    async def fire() -> list:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await service.afire_due_escalations(conn, now=now)

    return asyncio.run(fire())


def test_raise_is_idempotent_and_counts_retriggers(db, clock):
    world = seed(db)
    first = _raise(db, world, clock.now())
    assert first.state is AlarmState.ACTIVE and first.trigger_count == 1
    again = _raise(db, world, clock.advance(60))
    assert again.id == first.id
    assert again.trigger_count == 2
    assert again.last_triggered_at == clock.now()
    # another type on the same source is another alarm
    other = _raise(db, world, clock.now(), type="alarm_selftest_missed")
    assert other.id != first.id
    changes = [c.change for c in service.alarm_changes(db, alarm_id=first.id)]
    assert changes == ["raised", "retriggered"]


def test_raising_many_at_once_is_raising_each_in_turn(db, clock):
    # one round trip for a sweep's alarms (compliance at scale): the same alarms, in order,
    # a repeat of an open one in the same batch re-triggering it
    world = seed(db)
    base = {
        "source_type": "device",
        "source_id": world.city_lift,
        "severity": Severity.MAJOR,
        "message": "overdue",
        "audience": [Audience.FIRM],
        "at": clock.now(),
    }
    raised = service.raise_alarms(
        db,
        alarms=[
            base | {"type": "maintenance_overdue"},
            base | {"type": "alarm_selftest_missed", "details": {"tier": "quarterly"}},
            base | {"type": "maintenance_overdue"},
        ],
    )
    assert [a.type for a in raised] == [
        "maintenance_overdue",
        "alarm_selftest_missed",
        "maintenance_overdue",
    ]
    assert raised[0].id == raised[2].id != raised[1].id
    assert [a.trigger_count for a in raised] == [1, 1, 2]
    assert raised[1].details == {"tier": "quarterly"}
    assert service.raise_alarms(db, alarms=[]) == []


def test_acknowledge_then_clear_then_a_new_alarm(db, clock):
    world = seed(db)
    alarm = _raise(db, world, clock.now())
    acked = service.acknowledge_alarm(
        db, alarm_id=alarm.id, by="dispatcher:li", at=clock.advance(5)
    )
    assert acked.state is AlarmState.ACKNOWLEDGED
    assert acked.acknowledged_by == "dispatcher:li"
    # acknowledging twice keeps the first acknowledgement
    twice = service.acknowledge_alarm(db, alarm_id=alarm.id, by="someone", at=clock.advance(5))
    assert twice.acknowledged_by == "dispatcher:li"
    cleared = service.clear_alarm(db, alarm_id=alarm.id, by="system", at=clock.advance(5))
    assert cleared.state is AlarmState.CLEARED and not cleared.open
    with pytest.raises(AlarmStateError):
        service.acknowledge_alarm(db, alarm_id=alarm.id, by="x", at=clock.now())
    # once cleared, the same source and type raise a fresh alarm
    fresh = _raise(db, world, clock.advance(5))
    assert fresh.id != alarm.id and fresh.trigger_count == 1


def test_retrigger_of_acknowledged_alarm_makes_it_active_again(db, clock):
    world = seed(db)
    alarm = _raise(db, world, clock.now())
    service.acknowledge_alarm(db, alarm_id=alarm.id, by="firm", at=clock.advance(1))
    again = _raise(db, world, clock.advance(1))
    assert again.state is AlarmState.ACTIVE
    assert again.escalation_run == 2


def test_bad_input_is_refused_and_nothing_is_stored(db, clock):
    world = seed(db)
    with pytest.raises(ValueError):
        _raise(db, world, clock.now(), severity="apocalyptic")
    with pytest.raises(ValueError):
        _raise(db, world, clock.now(), audience=["everyone"])
    with pytest.raises(ValueError):
        _raise(db, world, clock.now(), audience=[])
    with pytest.raises(AlarmNotFound):
        service.acknowledge_alarm(db, alarm_id=424242, by="x", at=clock.now())
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        _raise(db, world, clock.now(), policy="no-such-policy")
    assert db.execute("SELECT count(*) AS n FROM alarms").fetchone()["n"] == 0


def test_one_open_alarm_per_source_and_type_under_concurrency(db_url, db, clock):
    world = seed(db)
    at = clock.now()

    def raise_once(_: int) -> int:
        with psycopg.connect(db_url) as conn:
            return _raise(conn, world, at).id

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(raise_once, range(16)))
    assert len(ids) == 1
    row = db.execute("SELECT count(*) AS n, max(trigger_count) AS t FROM alarms").fetchone()
    assert row == {"n": 1, "t": 16}
    raised = db.execute(
        "SELECT count(*) AS n FROM alarm_changes WHERE change = 'raised'"
    ).fetchone()["n"]
    assert raised == 1


def test_alarm_rolls_back_with_the_callers_transaction(db_url, db, clock):
    world = seed(db)
    with psycopg.connect(db_url) as conn:
        _raise(conn, world, clock.now())
        conn.rollback()
    assert service.list_alarms(db) == []


async def test_changes_are_announced_after_commit(db_url, db, clock):
    world = seed(db)
    async with notify.Listener(db_url, [notify.ALERTS]) as listener:
        stream = aiter(listener)
        # raised as the engines raise (sync), acknowledged as the API does (async)
        with psycopg.connect(db_url) as engine_conn:
            alarm = service.raise_alarm(
                engine_conn,
                source_type="device",
                source_id=world.city_lift,
                type="entrapment",
                severity="critical",
                message="trapped",
                audience=["firm"],
                at=clock.now(),
            )
            engine_conn.commit()
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await service.aacknowledge_alarm(conn, alarm_id=alarm.id, by="li", at=clock.now())
            await conn.commit()
        first = await asyncio.wait_for(anext(stream), 5)
        second = await asyncio.wait_for(anext(stream), 5)
    assert first["kind"] == "alarm" and first["change"] == "raised" and first["id"] == alarm.id
    assert second["change"] == "acknowledged" and second["state"] == "acknowledged"


def test_raise_queues_a_delivery_per_contact_of_the_audience(db, clock):
    world = seed(db)
    service.add_contact(
        db,
        party_type="firm",
        party_id=world.firm_id,
        audience="firm",
        channel="webhook",
        address="http://firm.example/hook",
    )
    service.add_contact(
        db,
        party_type="user_unit",
        party_id=world.user_unit_id,
        audience="user_unit",
        channel="email",
        address="safety@tower.example",
    )
    # a contact of an audience the alarm is not for hears nothing
    service.add_contact(
        db,
        party_type="jurisdiction",
        party_id=world.jurisdiction_id,
        audience="fire_service",
        channel="webhook",
        address="http://119.example/hook",
    )
    alarm = _raise(db, world, clock.now())
    queued = service.deliveries(db, alarm_id=alarm.id)
    assert sorted((d.channel, d.address) for d in queued) == [
        ("email", "safety@tower.example"),
        ("webhook", "http://firm.example/hook"),
    ]
    assert all(d.payload["alarm_id"] == alarm.id for d in queued)
    # re-triggering an active alarm does not spam the audience again
    _raise(db, world, clock.advance(1))
    assert len(service.deliveries(db, alarm_id=alarm.id)) == 2


def test_escalation_levels_fire_once_slow_down_on_ack_and_restart_on_retrigger(db_url, db, clock):
    # rule S2: acknowledging does not stop the chain; it goes on, slower, until resolved
    world = seed(db)
    service.create_policy(
        db,
        name="overdue",
        levels=[
            EscalationLevel(1, 0, (Audience.FIRM,)),
            EscalationLevel(2, 600, (Audience.FIRM_MANAGER,)),
            EscalationLevel(3, 1800, (Audience.REGULATOR,)),
        ],
        alarm_types=["maintenance_overdue"],
    )
    alarm = _raise(db, world, clock.now())
    assert [f.level for f in fire_due(db_url, now=clock.now())] == [1]
    assert fire_due(db_url, now=clock.now()) == []
    clock.advance(timedelta(minutes=10))
    assert [f.level for f in fire_due(db_url, now=clock.now())] == [2]
    assert fire_due(db_url, now=clock.advance(60)) == []
    started = alarm.escalation_started_at
    service.acknowledge_alarm(db, alarm_id=alarm.id, by="manager", at=clock.now())
    # acknowledged: level 3 is due after 4 x 30 min (the policy's factor), not 30 min
    assert fire_due(db_url, now=started + timedelta(minutes=119)) == []
    fired = fire_due(db_url, now=started + timedelta(minutes=120))
    assert [f.level for f in fired] == [3]
    clock.set(started + timedelta(minutes=121))
    # a re-trigger restarts the policy from level 1
    _raise(db, world, clock.advance(1))
    fired = fire_due(db_url, now=clock.now())
    assert [(f.run, f.level) for f in fired] == [(2, 1)]
    history = [(f.run, f.level) for f in service.escalation_firings(db, alarm_id=alarm.id)]
    assert history == [(1, 1), (1, 2), (1, 3), (2, 1)]
    # resolved: nothing more fires
    service.clear_alarm(db, alarm_id=alarm.id, by="manager", at=clock.now())
    assert fire_due(db_url, now=clock.advance(timedelta(days=1))) == []


def test_policy_levels_must_be_ordered(db):
    with pytest.raises(ValueError):
        service.create_policy(
            db,
            name="bad",
            levels=[EscalationLevel(1, 600, ("firm",)), EscalationLevel(2, 0, ("firm",))],
        )
    with pytest.raises(ValueError):
        service.create_policy(db, name="gap", levels=[EscalationLevel(2, 0, ("firm",))])


def test_history_is_append_only(db, clock):
    world = seed(db)
    alarm = _raise(db, world, clock.now())
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE alarm_changes SET actor = 'forger' WHERE alarm_id = %s", (alarm.id,))


def test_the_default_chain_climbs_from_the_assigned_technician_to_leadership(db_url, db, clock):
    # rule S2: technician → supervisor → manager → leadership, until resolved
    from tests.alerts.seed import add_technician, registry

    world = seed(db)
    wang = add_technician(db, firm_id=world.firm_id, name="wang", latitude=31.2, longitude=121.4)
    registry(db).assign(technician=wang, device=world.city_lift)
    service.add_contact(
        db,
        party_type="technician",
        party_id=wang,
        audience="technician",
        channel="console",
        address="wang",
    )
    for audience in ("supervisor", "firm_manager", "leadership"):
        service.add_contact(
            db,
            party_type="firm",
            party_id=world.firm_id,
            audience=audience,
            channel="console",
            address=audience,
        )
    service.ensure_default_chain(db, alarm_types=["controller_fault"])
    service.ensure_default_chain(db, alarm_types=["controller_fault"])  # idempotent
    alarm = _raise(db, world, clock.now(), type="controller_fault")
    start = alarm.escalation_started_at
    assert fire_due(db_url, now=start + timedelta(seconds=299)) == []
    assert [f.level for f in fire_due(db_url, now=start + timedelta(minutes=5))] == [1]
    service.acknowledge_alarm(db, alarm_id=alarm.id, by="wang", at=start + timedelta(minutes=6))
    # acknowledged, not resolved: the supervisor hears after 4 x 15 min
    assert fire_due(db_url, now=start + timedelta(minutes=59)) == []
    assert [f.level for f in fire_due(db_url, now=start + timedelta(hours=1))] == [2]
    late = start + timedelta(hours=16)
    assert [f.level for f in fire_due(db_url, now=late)] == [3, 4]
    sent = service.deliveries(db, subject_type="device", subject_id=world.city_lift)
    reasons = {(d.audience.value, d.address) for d in sent if d.reason.startswith("escalation")}
    assert reasons == {
        ("technician", "wang"),
        ("supervisor", "supervisor"),
        ("firm_manager", "firm_manager"),
        ("leadership", "leadership"),
    }
