"""The runner turns what the platform decided into work (issue 15): controller faults, lamp
failure (L1), mast relamping (L2), meter alarms (E1-E4), a rescue whose cause needs repair, a
visit the telemetry does not prove (M3); what it missed while down is taken at start; its
deadlines run on the clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from alerts import service as alerts
from alerts.models import Audience, Severity
from compliance.conditions import flows as conditions
from compliance.maintenance import flows as maintenance
from compliance.maintenance.models import Tier, checklist
from compliance.rescue import flows as rescue
from compliance.rescue.flows import StraightLineEstimator
from compliance.rescue.models import Trigger
from tests.alerts.harness import Notices, running
from tests.workorders.conftest import patrol
from vigil import notify
from workorders import flows, scheduled, service
from workorders.models import Kind, Level, Origin, Status


def work(change: str, device: str | None = None) -> Any:
    """Matcher of work-order notices."""

    def match(notice: Any) -> bool:
        return (
            isinstance(notice, dict)
            and notice.get("kind") == "work_order"
            and notice.get("change") == change
            and (device is None or notice.get("device") == device)
        )

    return match


def _state(conn, device: str, at, **metrics: float) -> None:
    for metric, value in metrics.items():
        conn.execute(
            "INSERT INTO device_state (device_id, metric, value, ts) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (device_id, metric) DO UPDATE "
            "SET value = excluded.value, ts = excluded.ts",
            (device, metric, value, at),
        )


def _order(conn, notice) -> Any:
    return service.get_work_order(conn, work_order_id=notice["id"])


async def test_faults_lamps_masts_and_meters_become_work(world, clock, db_url, resources_for):
    mast = world.fleet.device(
        "mast-1", site=world.city_site_id, kind="high_mast", firm=world.firm_id
    )
    async with (
        Notices(db_url, [notify.ALERTS]) as notices,
        resources_for() as resources,
        running(scheduled.run, resources=resources),
    ):
        # rule R1: a controller fault (door-close fault, code 2) raises the firm's fault alarm
        rescue.controller_fault(world.conn, device_id=world.lift, code=2, at=clock.now())
        [opened] = await notices.wait(work("opened", world.lift))
        fault = _order(world.conn, opened)
        assert (fault.kind, fault.level, fault.cause) == (
            Kind.FAULT_REPAIR,
            Level.MAJOR,
            "fault_code:2",
        )
        assert fault.origin is Origin.ALARM
        # another fault of the same lift is other work; the same one again is not
        rescue.controller_fault(world.conn, device_id=world.lift, code=9, at=clock.advance(60))
        await notices.wait(work("opened", world.lift), count=2)
        rescue.controller_fault(world.conn, device_id=world.lift, code=9, at=clock.advance(60))
        # rule L1: a lamp that should be lit draws nothing
        _state(world.conn, world.pole, clock.now(), lamp_on=1, lamp_power=0.2)
        # rule L2: half of the mast's lamps are out
        _state(world.conn, mast, clock.now(), lamp_on=1, lamp_power=800, lamps_total=8, lamps_out=4)
        # rule E2: the meter runs backwards
        _state(world.conn, world.meter, clock.now(), voltage_l1=231, power_total=-500)
        conditions.check(world.conn, now=clock.now())
        await notices.wait(work("opened"), count=6)  # lamp failure on the mast too
        orders = {(o.device_id, o.cause): o for o in _all(world.conn)}
    assert orders[(world.pole, "lamp_failure")].kind is Kind.LAMP_REPLACEMENT
    assert orders[(mast, "mast_relamping")].kind is Kind.MAST_RELAMPING
    assert orders[(world.meter, "reverse_energy")].kind is Kind.METER_FAULT
    assert orders[(world.lift, "fault_code:9")].level is Level.SEVERE
    assert len([o for o in orders.values() if o.device_id == world.lift]) == 2
    # rule S6: lighting and meters on the general-fault profile
    assert orders[(world.pole, "lamp_failure")].service_level["profiles"] == ["s6-general"]


def _all(conn) -> list[Any]:
    rows = conn.execute("SELECT id FROM work_orders ORDER BY id").fetchall()
    return [service.get_work_order(conn, work_order_id=r["id"]) for r in rows]


async def test_a_rescue_that_needs_repair_and_an_unproven_visit_become_work(
    world, clock, db_url, resources_for
):
    # the firm's technician lives near the city site and is on call (rules R3, R4)
    world.fleet.update(
        "technicians", world.technician_id, home_latitude=31.21, home_longitude=121.5
    )
    roster = alerts.create_roster(world.conn, firm_id=world.firm_id, name="24h")
    alerts.add_shift(
        world.conn,
        roster_id=roster,
        technician_id=world.technician_id,
        start=clock.now() - timedelta(hours=1),
        end=clock.now() + timedelta(days=1),
    )
    async with (
        Notices(db_url, [notify.ALERTS]) as notices,
        resources_for() as resources,
        running(scheduled.run, resources=resources),
    ):
        # the car stopped between floors with people inside: after the rescue, it is repaired
        opened = rescue.report(
            world.conn,
            device_id=world.lift,
            trigger=Trigger.STOPPED_OUTSIDE_DOOR_ZONE,
            at=clock.now(),
            actor="detector",
        )
        incident = opened.incident.id
        sent = rescue.dispatch_next(
            world.conn, incident_id=incident, now=clock.now(), estimator=StraightLineEstimator()
        )
        assert sent.dispatch is not None
        rescue.accept(
            world.conn, incident_id=incident, technician_id=world.technician_id, at=clock.now()
        )
        rescue.check_in(
            world.conn,
            technician_id=world.technician_id,
            device_id=world.lift,
            at=clock.advance(900),
            latitude=31.2,
            longitude=121.5,
        )
        rescue.release(world.conn, incident_id=incident, at=clock.advance(600), actor="technician")
        [repair] = await notices.wait(work("opened", world.lift))
        rescue.close(world.conn, incident_id=incident, at=clock.advance(60), actor="t")
        # rule M3: a visit claimed with no evidence in the telemetry is done again
        record, judgement = maintenance.submit_record(
            world.conn,
            device_id=world.far_lift,
            technician_id=world.technician_id,
            tier=Tier.HALF_MONTHLY,
            claimed_start=clock.now() - timedelta(hours=2),
            claimed_end=clock.now() - timedelta(hours=1),
            checklist_done=checklist(Tier.HALF_MONTHLY),
            recorded_by="wang",
            at=clock.now(),
        )
        assert judgement is not None and judgement.verdict != "verified"
        [corrective] = await notices.wait(work("opened", world.far_lift))
    order = _order(world.conn, repair)
    assert (order.kind, order.level, order.origin) == (
        Kind.EMERGENCY_REPAIR,
        Level.SEVERE,
        Origin.RESCUE,
    )
    assert len(_all(world.conn)) == 2  # the close did not open a second repair
    again = _order(world.conn, corrective)
    assert again.kind is Kind.CORRECTIVE_WORK and again.cause == f"maintenance_record:{record.id}"
    # late evidence proves the visit after all: the corrective work is no longer needed
    cancelled = flows.proven_after_all(
        world.conn, device_id=world.far_lift, record_id=record.id, at=clock.now()
    )
    assert cancelled is not None and cancelled.status is Status.CANCELLED


async def test_what_was_missed_while_down_is_taken_at_start_once(
    world, clock, db_url, resources_for
):
    alarm = alerts.raise_alarm(
        world.conn,
        source_type="device",
        source_id=world.meter,
        type="communication_loss",
        severity=Severity.WARNING,
        message="no reading for 3 poll periods",
        audience=[Audience.FIRM],
        at=clock.now(),
    )
    for _ in range(2):  # a restart takes nothing twice
        async with (
            Notices(db_url, [notify.ALERTS]) as notices,
            resources_for() as resources,
            running(scheduled.run, resources=resources),
        ):
            await clock.wait_for_sleepers(1)
    [order] = _all(world.conn)
    assert order.cause == "communication_loss" and order.source_ref == f"{alarm.id}:1"
    assert order.repeats == 0  # nor counted it again on the open order
    assert not [n for n in notices.seen if work("opened")(n)]  # the second start opened nothing


async def test_the_runner_keeps_the_deadlines_on_the_clock(world, clock, db_url, resources_for):
    start = clock.now()
    order = flows.open_or_repeat(
        world.conn,
        source=patrol(world.lift),
        at=start,
    ).work_order
    async with (
        Notices(db_url, [notify.ALERTS]) as notices,
        resources_for() as resources,
        running(scheduled.run, resources=resources),
    ):
        await clock.wait_for_sleepers(1)
        clock.advance(timedelta(minutes=10, seconds=1))  # level 3: respond within 10 minutes
        await notices.wait(work("breach", world.lift))
        # rule S2: a missed deadline escalates at once, before the hour of "escalate after"
        await notices.wait(work("escalated", world.lift))
        clock.advance(timedelta(minutes=50))  # on site within the hour: missed too
        await notices.wait(work("breach", world.lift), count=2)
    missed = [str(b) for b in service.breaches(world.conn, work_order_id=order.id)]
    assert missed == ["respond", "on_site"]
