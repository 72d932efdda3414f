"""Rules S1 and S2 on the fake clock: a missed deadline is recorded once and stays a breach
when the work is done later; an unresolved order escalates level by level up its chain until it
is resolved."""

from __future__ import annotations

from datetime import timedelta

from alerts import service as alerts
from alerts.models import AlarmState
from tests.alerts.test_alarm_lifecycle import fire_due
from tests.workorders.conftest import patrol
from tests.workorders.test_lifecycle import AT_SITE
from workorders import flows, service
from workorders.models import Deadline, Level, Status, Step


def test_a_missed_deadline_is_recorded_once_and_stays_a_breach(world, clock):
    start = clock.now()
    order = flows.open_or_repeat(
        world.conn, source=patrol(world.lift, level=Level.SEVERE), at=start
    ).work_order
    # level 1 in a city: escalates at once, responds in 5 minutes, on site in 40, restored in 4
    # hours
    assert flows.check_deadlines(world.conn, now=start + timedelta(minutes=5)) == 1
    assert service.has_step(world.conn, work_order_id=order.id, step=Step.ESCALATED)
    assert service.breaches(world.conn, work_order_id=order.id) == []
    clock.advance(timedelta(minutes=5, seconds=1))
    flows.check_deadlines(world.conn, now=clock.now())
    assert service.breaches(world.conn, work_order_id=order.id) == [Deadline.RESPOND]
    flows.check_deadlines(world.conn, now=clock.advance(60))  # recorded once
    assert service.breaches(world.conn, work_order_id=order.id) == [Deadline.RESPOND]
    # the work goes on: assigned late, on site in time, resolved in time
    flows.assign(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=clock.now(),
        actor="duty line",
    )
    flows.accept(
        world.conn, work_order_id=order.id, technician_id=world.technician_id, at=clock.now()
    )
    flows.check_in(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=start + timedelta(minutes=39),
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    clock.set(start + timedelta(minutes=39))
    flows.resolve(world.conn, work_order_id=order.id, at=clock.advance(600), actor="t")
    flows.check_deadlines(world.conn, now=clock.advance(timedelta(hours=5)))
    # a breach stays a breach; the deadlines met are not breached
    assert service.breaches(world.conn, work_order_id=order.id) == [Deadline.RESPOND]
    breach_steps = [
        s for s in service.steps(world.conn, work_order_id=order.id) if s.step is Step.BREACH
    ]
    assert [s.details["deadline"] for s in breach_steps] == ["respond"]


def test_a_step_taken_after_its_deadline_records_the_breach_itself(world, clock):
    # no runner was watching: the late on-site check-in still records the miss
    start = clock.now()
    order = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=start).work_order
    flows.assign(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=start + timedelta(minutes=2),
        actor="d",
    )
    flows.accept(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=start + timedelta(minutes=3),
    )
    flows.check_in(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=start + timedelta(minutes=61),  # level 3, city: 60 minutes
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    assert service.breaches(world.conn, work_order_id=order.id) == [Deadline.ON_SITE]


def test_an_unresolved_order_escalates_up_its_chain_until_resolved(world, clock, db_url):
    # rule S2: level 2 escalates after 30 minutes; technician, supervisor, manager, leadership
    start = clock.now()
    order = flows.open_or_repeat(
        world.conn, source=patrol(world.lift, level=Level.MAJOR), at=start
    ).work_order
    assert service.next_due(world.conn) == start + timedelta(minutes=10)  # respond first
    flows.respond(world.conn, work_order_id=order.id, at=start + timedelta(minutes=5), actor="d")
    flows.check_deadlines(world.conn, now=start + timedelta(minutes=29))
    alarm_type = flows.escalation_alarm_type(order)
    assert alerts.list_alarms(world.conn, type=alarm_type) == []
    escalated_at = start + timedelta(minutes=30)
    flows.check_deadlines(world.conn, now=escalated_at)
    [alarm] = alerts.list_alarms(world.conn, type=alarm_type)
    assert alarm.details["work_order_id"] == order.id
    assert [f.level for f in fire_due(db_url, now=escalated_at)] == [1]
    assert [f.level for f in fire_due(db_url, now=escalated_at + timedelta(minutes=30))] == [2]
    assert [f.level for f in fire_due(db_url, now=escalated_at + timedelta(hours=1))] == [3]
    flows.check_deadlines(world.conn, now=escalated_at + timedelta(hours=1))  # escalates once
    assert len(alerts.list_alarms(world.conn, type=alarm_type, states=list(AlarmState))) == 1
    # resolved: the chain stops before leadership
    flows.assign(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=escalated_at + timedelta(hours=1),
        actor="d",
    )
    flows.accept(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=escalated_at + timedelta(hours=1),
    )
    flows.check_in(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=escalated_at + timedelta(hours=1),
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    resolved = flows.resolve(
        world.conn, work_order_id=order.id, at=escalated_at + timedelta(hours=1), actor="t"
    )
    assert resolved.status is Status.RESOLVED
    assert fire_due(db_url, now=escalated_at + timedelta(hours=3)) == []
    assert alerts.get_alarm(world.conn, alarm_id=alarm.id).state is AlarmState.CLEARED


def test_a_missed_deadline_escalates_at_once(world, clock):
    # rule S2: a breach escalates up the chain without waiting for "escalate after" (1 hour at
    # level 3); the escalation happens once
    start = clock.now()
    order = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=start).work_order
    flows.check_deadlines(world.conn, now=start + timedelta(minutes=11))
    [alarm] = alerts.list_alarms(world.conn, type=flows.escalation_alarm_type(order))
    assert alarm.raised_at == start + timedelta(minutes=11)
    flows.check_deadlines(world.conn, now=start + timedelta(hours=2))  # on site missed too
    steps = [s.step for s in service.steps(world.conn, work_order_id=order.id)]
    assert steps.count(Step.ESCALATED) == 1 and steps.count(Step.BREACH) == 2
