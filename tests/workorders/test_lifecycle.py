"""A work order from opening to closing: assignment to a qualified technician of the firm (rule
M10), proof of presence, resolution, the callback (S4), each step kept and logged (A1); one
open order per device and cause; repeat faults (S5)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.log import flows as log_flows
from compliance.log import service as log_service
from tests.workorders.conftest import patrol
from workorders import flows, service
from workorders.models import Deadline, Status, Step, WorkOrderError

AT_SITE = (31.2001, 121.5001)  # a few metres from the city site
ACROSS_TOWN = (31.3, 121.6)


def _opened(world, clock, **kwargs):
    return flows.open_or_repeat(world.conn, source=patrol(world.lift, **kwargs), at=clock.now())


def test_a_work_order_goes_from_opened_to_closed_and_every_step_is_logged(world, clock):
    order = _opened(world, clock).work_order
    assert order.status is Status.OPENED
    order = flows.assign(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=clock.advance(60),
        actor="dispatcher",
    )
    assert order.status is Status.ASSIGNED and order.responded_at == clock.now()
    order = flows.accept(
        world.conn, work_order_id=order.id, technician_id=world.technician_id, at=clock.advance(60)
    )
    order = flows.check_in(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=clock.advance(600),
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    assert order.status is Status.ON_SITE and order.on_site_at == clock.now()
    order = flows.resolve(world.conn, work_order_id=order.id, at=clock.advance(1800), actor="t")
    assert order.status is Status.RESOLVED
    # rule S4: an unreached customer is tried again; the order waits
    order = flows.callback(
        world.conn,
        work_order_id=order.id,
        at=clock.advance(3600),
        actor="dispatcher",
        reached=False,
        satisfaction=None,
    )
    assert order.status is Status.RESOLVED
    order = flows.callback(
        world.conn,
        work_order_id=order.id,
        at=clock.advance(3600),
        actor="dispatcher",
        reached=True,
        satisfaction=5,
        note="all good",
    )
    assert order.status is Status.CLOSED and order.closed_at == clock.now()
    assert [s.step for s in service.steps(world.conn, work_order_id=order.id)] == [
        Step.OPENED,
        Step.ASSIGNED,
        Step.ACCEPTED,
        Step.ON_SITE,
        Step.RESOLVED,
        Step.CALLBACK,
        Step.CALLBACK,
        Step.CLOSED,
    ]
    assert [c.satisfaction for c in service.callbacks(world.conn, work_order_id=order.id)] == [
        None,
        5,
    ]
    # rule A1: each step is in the hash-chained log, which still verifies
    kinds = [
        e.kind
        for e in log_service.entries(world.conn, subject_type="work_order", subject_id=order.id)
    ]
    assert kinds[0] == "work_order.opened" and kinds[-1] == "work_order.closed"
    assert len(kinds) == 8
    assert log_flows.verify(world.conn).ok
    assert service.breaches(world.conn, work_order_id=order.id) == []
    with pytest.raises(Exception, match="append-only"):
        world.conn.execute("DELETE FROM work_order_steps WHERE work_order_id = %s", (order.id,))


def test_steps_out_of_order_are_refused(world, clock):
    order = _opened(world, clock).work_order
    with pytest.raises(WorkOrderError, match="opened cannot become resolved"):
        flows.resolve(world.conn, work_order_id=order.id, at=clock.now(), actor="t")
    with pytest.raises(WorkOrderError, match="callback follows the resolution"):
        flows.callback(
            world.conn,
            work_order_id=order.id,
            at=clock.now(),
            actor="d",
            reached=True,
            satisfaction=3,
        )
    with pytest.raises(WorkOrderError, match="satisfaction"):
        flows.callback(
            world.conn,
            work_order_id=order.id,
            at=clock.now(),
            actor="d",
            reached=True,
            satisfaction=None,
        )
    cancelled = flows.cancel(
        world.conn, work_order_id=order.id, at=clock.now(), actor="d", reason="duplicate call"
    )
    assert cancelled.status is Status.CANCELLED
    with pytest.raises(WorkOrderError, match="is cancelled"):
        flows.assign(
            world.conn,
            work_order_id=order.id,
            technician_id=world.technician_id,
            at=clock.now(),
            actor="d",
        )


def test_only_a_qualified_technician_of_the_firm_in_force_is_assigned(world, clock):
    # rule M10: the certificate and the firm's licence must be valid; A2: only the firm's own
    order = _opened(world, clock).work_order
    with pytest.raises(WorkOrderError, match="not of the firm"):
        flows.assign(
            world.conn,
            work_order_id=order.id,
            technician_id=world.other_technician_id,
            at=clock.now(),
            actor="d",
        )
    with pytest.raises(WorkOrderError, match="not qualified"):
        flows.assign(
            world.conn,
            work_order_id=order.id,
            technician_id=world.expired_technician_id,
            at=clock.now(),
            actor="d",
        )
    with pytest.raises(WorkOrderError, match="no technician"):
        flows.assign(
            world.conn, work_order_id=order.id, technician_id=999999, at=clock.now(), actor="d"
        )
    assert service.get_work_order(world.conn, work_order_id=order.id).status is Status.OPENED


def test_presence_is_proven_by_a_measured_position_at_the_site_or_by_inspection_mode(world, clock):
    order = _opened(world, clock).work_order
    flows.assign(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=clock.now(),
        actor="d",
    )
    flows.accept(
        world.conn, work_order_id=order.id, technician_id=world.technician_id, at=clock.advance(10)
    )
    with pytest.raises(WorkOrderError, match="no proof of presence"):
        flows.check_in(
            world.conn,
            work_order_id=order.id,
            technician_id=world.technician_id,
            at=clock.now(),
            latitude=None,
            longitude=None,
        )
    with pytest.raises(WorkOrderError, match="not at the site"):
        flows.check_in(
            world.conn,
            work_order_id=order.id,
            technician_id=world.technician_id,
            at=clock.now(),
            latitude=ACROSS_TOWN[0],
            longitude=ACROSS_TOWN[1],
        )
    with pytest.raises(WorkOrderError, match="not assigned to technician"):
        flows.check_in(
            world.conn,
            work_order_id=order.id,
            technician_id=world.other_technician_id,
            at=clock.now(),
            latitude=AT_SITE[0],
            longitude=AT_SITE[1],
        )
    # the lift is switched to inspection mode (service mode 2) after the work was accepted
    switched = clock.advance(300)
    world.conn.execute(
        "INSERT INTO events (device_id, metric, ts, value, previous) "
        "VALUES (%s, 'service_mode', %s, 2, 1)",
        (world.lift, switched),
    )
    world.conn.execute(
        "INSERT INTO device_state (device_id, metric, value, ts) "
        "VALUES (%s, 'service_mode', 2, %s)",
        (world.lift, switched),
    )
    order = flows.check_in(
        world.conn,
        work_order_id=order.id,
        technician_id=world.technician_id,
        at=clock.advance(5),
        latitude=None,
        longitude=None,
    )
    assert order.status is Status.ON_SITE
    [on_site] = [
        s for s in service.steps(world.conn, work_order_id=order.id) if s.step is Step.ON_SITE
    ]
    assert on_site.details["proof"] == "inspection_mode"


def test_one_open_order_per_device_and_cause_and_repeats_attach_to_it(world, clock):
    first = _opened(world, clock)
    again = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=clock.advance(60))
    other = flows.open_or_repeat(
        world.conn, source=patrol(world.lift, cause="door-noise"), at=clock.now()
    )
    assert first.created and not again.created and other.created
    assert again.work_order.id == first.work_order.id and again.work_order.repeats == 1
    assert other.work_order.id != first.work_order.id
    steps = [s.step for s in service.steps(world.conn, work_order_id=first.work_order.id)]
    assert steps == [Step.OPENED, Step.REPEATED]


def _close(world, clock, order_id):
    flows.assign(
        world.conn,
        work_order_id=order_id,
        technician_id=world.technician_id,
        at=clock.now(),
        actor="d",
    )
    flows.accept(
        world.conn, work_order_id=order_id, technician_id=world.technician_id, at=clock.now()
    )
    flows.check_in(
        world.conn,
        work_order_id=order_id,
        technician_id=world.technician_id,
        at=clock.now(),
        latitude=AT_SITE[0],
        longitude=AT_SITE[1],
    )
    flows.resolve(world.conn, work_order_id=order_id, at=clock.now(), actor="t")
    flows.callback(
        world.conn, work_order_id=order_id, at=clock.now(), actor="d", reached=True, satisfaction=4
    )


def test_the_same_fault_within_30_days_is_a_repeat_fault(world, clock):
    # rule S5: flagged with the earlier order; after 30 days it is a new fault
    first = _opened(world, clock).work_order
    _close(world, clock, first.id)
    second = flows.open_or_repeat(
        world.conn, source=patrol(world.lift), at=clock.advance(timedelta(days=29))
    ).work_order
    assert second.id != first.id and second.repeat_of == first.id
    _close(world, clock, second.id)
    third = flows.open_or_repeat(
        world.conn, source=patrol(world.lift), at=clock.advance(timedelta(days=31))
    ).work_order
    assert third.repeat_of is None
    assert Deadline.RESPOND not in service.breaches(world.conn, work_order_id=first.id)
