from datetime import timedelta

import psycopg
import pytest

from compliance.log import service as compliance_log
from compliance.rescue import flows, service
from compliance.rescue.models import RescueError, Status, Step, Trigger
from tests.alerts.harness import Notices
from tests.alerts.seed import add_lift, seed
from tests.rescue.lift import IDLE, detector, incidents, push, reported


def _add_lift(db, world, device):
    add_lift(db, world=world, device_id=device, model="t")


async def test_alarm_button_opens_an_incident_unless_at_a_landing_with_doors_open(
    db_url, db, clock, resources_for
):
    # rule R1
    world = seed(db)
    _add_lift(db, world, "lift-landing")
    for lift in ("lift-landing", world.city_lift):
        push(db, lift, clock.now(), **IDLE)
    async with Notices(db_url) as notices, detector(resources_for) as progress:
        clock.advance(5)
        # at a landing with doors open: people can walk out, no entrapment
        push(db, "lift-landing", clock.now(), alarm_button=1)
        # between floors with the doors shut: an entrapment
        push(
            db,
            world.city_lift,
            clock.now(),
            car_status=0,
            door_zone=0,
            door_state=0,
            passengers=1,
            alarm_button=1,
        )
        [notice] = await notices.wait(reported)
        await progress.state_of(world.city_lift)
    [incident] = incidents(db)
    assert incident["device_id"] == world.city_lift
    assert incident["trigger"] == "alarm_button"
    assert incident["reported_at"] == clock.now()
    assert notice["id"] == incident["id"]


async def test_stopped_outside_door_zone_with_passengers_for_30_s(db_url, db, clock, resources_for):
    # rule R1
    world = seed(db)
    _add_lift(db, world, "lift-empty")
    for lift in ("lift-empty", world.city_lift):
        push(db, lift, clock.now(), **IDLE)
    async with Notices(db_url) as notices, detector(resources_for) as progress:
        stopped_at = clock.advance(10)
        # both stop between floors; only one has passengers
        push(db, "lift-empty", stopped_at, door_zone=0, door_state=0)
        push(db, world.city_lift, stopped_at, door_zone=0, door_state=0, passengers=1)
        await progress.state_of(world.city_lift)
        clock.advance(29)
        clock.advance(1)
        await notices.wait(reported)
        # the car keeps reporting the same state: that is one entrapment, not many signals
        for _ in range(3):
            push(db, world.city_lift, clock.advance(1), passengers=1)
        await progress.state_of(world.city_lift, count=4)
        clock.advance(300)
    [incident] = incidents(db)
    assert incident["device_id"] == world.city_lift
    assert incident["trigger"] == "stopped_outside_door_zone"
    steps = [s.step for s in service.steps(db, incident_id=incident["id"])]
    assert Step.SIGNAL not in steps and steps[0] is Step.REPORTED
    assert incident["reported_at"] == stopped_at + timedelta(seconds=30)


async def test_trapped_at_floor_with_doors_closed_for_120_s(db_url, db, clock, resources_for):
    # rule R1
    world = seed(db)
    _add_lift(db, world, "lift-opens")
    for lift in ("lift-opens", world.city_lift):
        push(db, lift, clock.now(), **IDLE)
    async with Notices(db_url) as notices, detector(resources_for) as progress:
        closed_at = clock.advance(10)
        for lift in ("lift-opens", world.city_lift):
            push(db, lift, closed_at, door_state=0, passengers=1)
        await progress.state_of(world.city_lift)
        clock.advance(60)
        # this one's doors open after a minute: the passengers walk out
        push(db, "lift-opens", clock.now(), door_state=1)
        await progress.state_of("lift-opens", count=2)
        clock.advance(59)
        clock.advance(1)
        await notices.wait(reported)
        clock.advance(600)
    [incident] = incidents(db)
    assert incident["device_id"] == world.city_lift
    assert incident["trigger"] == "trapped_at_floor"
    assert incident["reported_at"] == closed_at + timedelta(seconds=120)


async def test_condition_ending_before_the_dwell_opens_nothing(db_url, db, clock, resources_for):
    world = seed(db)
    push(db, world.city_lift, clock.now(), **IDLE)
    async with detector(resources_for) as progress:
        push(db, world.city_lift, clock.advance(1), door_zone=0, door_state=0, passengers=1)
        await progress.state_of(world.city_lift)
        clock.advance(20)
        push(db, world.city_lift, clock.now(), door_zone=1)  # levelled at a floor
        push(db, world.city_lift, clock.advance(1), door_state=2)  # and opened
        await progress.state_of(world.city_lift, count=3)
        clock.advance(600)
        # a marker: a manual report goes through the same runner after the timers had their chance
        flows.report(
            db, device_id=world.rural_lift, trigger=Trigger.MANUAL, at=clock.now(), actor="caller"
        )
    assert [i["device_id"] for i in incidents(db)] == [world.rural_lift]


def test_manual_report_later_signals_attach_and_false_alarm_is_logged(db, clock):
    # rules R1, R6, A1
    world = seed(db)
    first = flows.report(
        db,
        device_id=world.city_lift,
        trigger=Trigger.MANUAL,
        at=clock.now(),
        actor="phone:110",
        detail={"caller": "resident"},
    )
    assert first.created and first.incident.status is Status.REPORTED
    again = flows.report(
        db,
        device_id=world.city_lift,
        trigger=Trigger.ALARM_BUTTON,
        at=clock.advance(20),
        actor="detector",
    )
    assert not again.created and again.incident.id == first.incident.id
    with pytest.raises(RescueError):
        flows.close_false_alarm(
            db, incident_id=first.incident.id, at=clock.now(), actor="x", reason=" "
        )
    closed = flows.close_false_alarm(
        db,
        incident_id=first.incident.id,
        at=clock.advance(60),
        actor="dispatcher:li",
        reason="children pressed the button",
    )
    assert closed.status is Status.FALSE_ALARM and not closed.open
    steps = [s.step for s in service.steps(db, incident_id=first.incident.id)]
    assert steps == [Step.REPORTED, Step.SIGNAL, Step.FALSE_ALARM]
    logged = compliance_log.entries(
        db, subject_type="rescue_incident", subject_id=first.incident.id
    )
    assert [e.kind for e in logged] == ["rescue.reported", "rescue.signal", "rescue.false_alarm"]
    assert logged[-1].body["reason"] == "children pressed the button"
    # the entrapment alarm cleared with it; a new signal opens a new incident
    alarm = db.execute("SELECT state FROM alarms WHERE id = %s", (closed.alarm_id,)).fetchone()
    assert alarm["state"] == "cleared"
    fresh = flows.report(
        db, device_id=world.city_lift, trigger=Trigger.MANUAL, at=clock.advance(5), actor="phone"
    )
    assert fresh.created and fresh.incident.id != first.incident.id


def test_one_open_incident_per_elevator_is_a_database_rule(db, clock):
    world = seed(db)
    opened = flows.report(
        db, device_id=world.city_lift, trigger=Trigger.MANUAL, at=clock.now(), actor="phone"
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "INSERT INTO rescue_incidents (device_id, site_id, jurisdiction_id, trigger, tier, "
            "deadline_minutes, clock_from, reported_at, arrival_deadline) "
            "SELECT device_id, site_id, jurisdiction_id, 'manual', tier, 30, 'report', now(), "
            "now() FROM rescue_incidents WHERE id = %s",
            (opened.incident.id,),
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE rescue_steps SET actor = 'forger'")
    with pytest.raises(RescueError):
        flows.report(
            db, device_id="no-such-lift", trigger=Trigger.MANUAL, at=clock.now(), actor="phone"
        )


async def test_a_restarted_runner_misses_no_entrapment(db_url, db, clock, resources_for):
    # rule R1: what happened while no runner listened is found by the start-up scan
    world = seed(db)
    _add_lift(db, world, "lift-pressed")
    _add_lift(db, world, "lift-landing")
    for lift in ("lift-pressed", "lift-landing", world.city_lift):
        push(db, lift, clock.now(), **IDLE)
    stopped_at = clock.advance(10)
    push(db, world.city_lift, stopped_at, door_zone=0, door_state=0, passengers=1)
    push(db, "lift-pressed", stopped_at, door_state=0, passengers=1, alarm_button=1)
    push(db, "lift-pressed", clock.advance(3), alarm_button=0)  # a short press, released
    push(db, "lift-landing", clock.now(), alarm_button=1)  # doors open at a landing
    clock.advance(40)
    async with detector(resources_for):
        pass
    found = {i["device_id"]: i for i in incidents(db)}
    assert set(found) == {world.city_lift, "lift-pressed"}
    assert found["lift-pressed"]["trigger"] == "alarm_button"
    assert found[world.city_lift]["trigger"] == "stopped_outside_door_zone"
