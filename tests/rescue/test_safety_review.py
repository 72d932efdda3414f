"""The defects an independent review of rules R1-R8 found, each with a test that failed before.

Numbers refer to the items of the safety-path issue.
"""

from datetime import date, timedelta

import pytest

from alerts import scheduled as alerts_scheduled
from alerts import service as alerts
from alerts.models import AlarmState
from compliance.log import flows as log_flows
from compliance.log import service as compliance_log
from compliance.rescue import flows, service
from compliance.rescue.models import (
    RescueError,
    Status,
    Step,
    StillTrapped,
    Trigger,
    UnknownTechnician,
)
from tests.alerts.harness import Notices
from tests.alerts.seed import add_technician, registry, seed
from tests.rescue.crew import crew
from tests.rescue.lift import IDLE, detector, incidents, push, reported
from tests.rescue.test_detection import _add_lift

ESTIMATOR = flows.StraightLineEstimator()
H = timedelta(hours=1)
MIN = timedelta(minutes=1)
# the car stopped between floors with somebody inside, doors shut
TRAPPED = {"car_status": 0, "door_zone": 0, "door_state": 0, "passengers": 1}
# the passengers are out: parked at a landing, doors open, empty, no fault
FREED = {**IDLE, "fault_code": 0}


def _report(db, device, clock, trigger=Trigger.MANUAL):
    return flows.report(
        db, device_id=device, trigger=trigger, at=clock.now(), actor="phone"
    ).incident


def _to_released(db, clock, *, world, team):
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(30))
    flows.inspection_arrival(db, device_id=world.city_lift, at=clock.advance(600))
    return flows.release(db, incident_id=incident.id, at=clock.advance(300), actor="tech")


# -- 1. trapped again after release ---------------------------------------------------------------


def test_trapped_again_after_release_gets_a_new_incident_with_dispatch_and_deadline(db, clock):
    # rules R1, R2, R4: the released incident closes, a new one opens and is dispatched
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    released = _to_released(db, clock, world=world, team=team)
    assert released.status is Status.RELEASED
    again = flows.report(
        db,
        device_id=world.city_lift,
        trigger=Trigger.ALARM_BUTTON,
        at=clock.advance(60),
        actor="detector",
    )
    assert again.created
    new = again.incident
    assert new.id != released.id and new.follows_incident_id == released.id
    assert new.arrival_deadline == clock.now() + 30 * MIN
    old = service.get_incident(db, incident_id=released.id)
    assert old.status is Status.CLOSED
    [closed] = [s for s in service.steps(db, incident_id=old.id) if s.step is Step.CLOSED]
    assert closed.detail["reason"] == "passengers trapped again"
    # a fresh, active alarm and a dispatch with its own accept window
    assert alerts.get_alarm(db, alarm_id=new.alarm_id).state is AlarmState.ACTIVE
    assert new.alarm_id != old.alarm_id
    outcome = flows.dispatch_next(db, incident_id=new.id, now=clock.now(), estimator=ESTIMATOR)
    assert outcome.dispatch is not None
    assert log_flows.verify(db).ok


# -- 2. no release, close or false alarm while the controller says people are trapped ------------


@pytest.mark.parametrize(
    "trapped",
    [
        {**IDLE, "fault_code": 11},  # the controller's own trapped-passenger code
        {**IDLE, "door_state": 0, "passengers": 1, "fault_code": 3},  # door-open fault
        {**TRAPPED, "fault_code": 0},  # between floors, occupied
    ],
)
def test_release_close_and_false_alarm_are_refused_while_people_are_trapped(db, clock, trapped):
    # rule R6
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    push(db, world.city_lift, clock.now(), **trapped)
    incident = _report(db, world.city_lift, clock)
    with pytest.raises(StillTrapped):
        flows.close_false_alarm(
            db, incident_id=incident.id, at=clock.now(), actor="disp", reason="a prank"
        )
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(30))
    flows.inspection_arrival(db, device_id=world.city_lift, at=clock.advance(600))
    with pytest.raises(StillTrapped, match="still"):
        flows.release(db, incident_id=incident.id, at=clock.advance(60), actor="tech")
    assert service.get_incident(db, incident_id=incident.id).status is Status.ARRIVED
    alarm = alerts.get_alarm(db, alarm_id=incident.alarm_id)
    assert alarm.state is not AlarmState.CLEARED
    # once the controller shows the car empty at a landing, doors open, it can be released
    push(db, world.city_lift, clock.advance(30), **FREED)
    flows.release(db, incident_id=incident.id, at=clock.now(), actor="tech")
    # ... and if somebody is trapped again before it is closed, closing is refused
    push(db, world.city_lift, clock.advance(30), **trapped)
    with pytest.raises(StillTrapped):
        flows.close(db, incident_id=incident.id, at=clock.now(), actor="disp")
    push(db, world.city_lift, clock.advance(30), **FREED)
    closed = flows.close(db, incident_id=incident.id, at=clock.now(), actor="disp")
    assert closed.status is Status.CLOSED
    assert alerts.get_alarm(db, alarm_id=incident.alarm_id).state is AlarmState.CLEARED


# -- 3. controller fault codes ------------------------------------------------------------------


async def test_fault_codes_4_and_11_open_incidents_and_1_to_10_raise_fault_alarms(
    db_url, db, clock, resources_for
):
    # rule R1 (GB/T 24476): codes 4 and 11 are entrapments; the others need repair
    world = seed(db)
    for lift in ("lift-4", "lift-11", "lift-2"):
        _add_lift(db, world, lift)
        push(db, lift, clock.now(), **FREED)
    async with Notices(db_url) as notices, detector(resources_for) as progress:
        at = clock.advance(5)
        push(db, "lift-4", at, fault_code=4)
        push(db, "lift-11", at, fault_code=11)
        push(db, "lift-2", at, fault_code=2)
        await notices.wait(reported, count=2)
        await progress.state_of("lift-2")
        [fault] = alerts.list_alarms(db, type=flows.FAULT_ALARM)
        assert fault.source_id == "lift-2" and fault.details["fault_code"] == 2
        assert fault.state is AlarmState.ACTIVE
        # the fault is fixed: the controller reports 0 and the alarm clears
        push(db, "lift-2", clock.advance(60), fault_code=0)
        await progress.state_of("lift-2", count=2)
    found = {i["device_id"]: i for i in incidents(db)}
    assert set(found) == {"lift-4", "lift-11"}
    assert {i["trigger"] for i in found.values()} == {"fault_code"}
    assert found["lift-4"]["reported_at"] == at
    assert alerts.get_alarm(db, alarm_id=fault.id).state is AlarmState.CLEARED
    kinds = [e.kind for e in compliance_log.entries(db, subject_type="device", subject_id="lift-2")]
    assert kinds == ["alarm.raised", "alarm.cleared"]


# -- 4. a busy technician is not dispatched again -----------------------------------------------


def test_a_technician_on_another_open_rescue_is_not_a_candidate(db, clock):
    # rule R4
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    _add_lift(db, world, "lift-city-2")
    first = _report(db, world.city_lift, clock)
    sent = flows.dispatch_next(db, incident_id=first.id, now=clock.now(), estimator=ESTIMATOR)
    assert sent.dispatch.technician_id == team.near
    second = _report(db, "lift-city-2", clock)
    other = flows.dispatch_next(db, incident_id=second.id, now=clock.now(), estimator=ESTIMATOR)
    assert other.dispatch.technician_id == team.far
    assert [r.candidate.technician_id for r in other.ranked] == [team.far]
    # accepted and on the way: still busy; once the first passengers are out, free again
    flows.accept(db, incident_id=first.id, technician_id=team.near, at=clock.advance(20))
    third_lift = _report(db, world.rural_lift, clock)
    third = flows.dispatch_next(db, incident_id=third_lift.id, now=clock.now(), estimator=ESTIMATOR)
    assert third.dispatch is None and third.escalated  # nobody free: R5 at once
    flows.inspection_arrival(db, device_id=world.city_lift, at=clock.advance(300))
    flows.release(db, incident_id=first.id, at=clock.advance(60), actor="tech")
    freed = flows.dispatch_next(db, incident_id=third_lift.id, now=clock.now(), estimator=ESTIMATOR)
    assert freed.dispatch.technician_id == team.near


# -- 5. a press received before a restart counts from when it was received ----------------------


async def test_a_press_found_at_start_counts_from_when_it_was_received(
    db_url, db, clock, resources_for
):
    # rules R1, R2
    world = seed(db)
    push(db, world.city_lift, clock.now(), **IDLE)
    pressed_at = clock.advance(10)
    push(db, world.city_lift, pressed_at, **TRAPPED, alarm_button=1)
    push(db, world.city_lift, clock.advance(2), alarm_button=0)
    clock.advance(600)  # the engine was down for ten minutes
    async with detector(resources_for):
        pass
    [incident] = incidents(db)
    assert incident["trigger"] == "alarm_button"
    assert incident["reported_at"] == pressed_at
    assert incident["arrival_deadline"] == pressed_at + 30 * MIN


async def test_a_dwell_found_at_start_counts_from_the_end_of_its_dwell(
    db_url, db, clock, resources_for
):
    # rules R1, R2: 30 s after the car stopped between floors with somebody inside
    world = seed(db)
    push(db, world.city_lift, clock.now(), **IDLE)
    stopped_at = clock.advance(10)
    push(db, world.city_lift, stopped_at, **TRAPPED)
    clock.advance(900)
    async with detector(resources_for):
        pass
    [incident] = incidents(db)
    assert incident["reported_at"] == stopped_at + timedelta(seconds=30)


# -- 6. dispatch-origin clock with nobody to dispatch -------------------------------------------


def test_a_dispatch_clock_with_nobody_to_dispatch_counts_from_the_report(db, clock):
    # rules R2, R5
    world = seed(db, clock_from="dispatch")
    incident = _report(db, world.city_lift, clock)
    assert incident.arrival_deadline is None
    outcome = flows.dispatch_next(
        db, incident_id=incident.id, now=clock.advance(5), estimator=ESTIMATOR
    )
    assert outcome.dispatch is None and outcome.escalated
    fixed = service.get_incident(db, incident_id=incident.id)
    assert fixed.arrival_deadline == incident.reported_at + 30 * MIN
    assert not flows.deadline_passed(db, incident_id=incident.id, now=clock.advance(29 * 60))
    assert flows.deadline_passed(db, incident_id=incident.id, now=clock.advance(60))
    assert [b["kind"] for b in service.breaches(db, incident_id=incident.id)] == [
        "arrival_deadline"
    ]


# -- 7. coverage counts only qualified technicians, per contracted elevator ----------------------


def test_a_shift_held_by_an_expired_technician_is_a_roster_gap(db, clock):
    # rules R3, M10: the certificate expires at the end of its date at the site (Shanghai)
    world = seed(db)
    now = clock.now()  # 2026-01-05 08:00 UTC = 16:00 in Shanghai
    expiring = add_technician(
        db,
        firm_id=world.firm_id,
        name="expiring",
        latitude=31.2,
        longitude=121.4,
        certificate_expires=date(2026, 1, 5),
    )
    roster = alerts.create_roster(db, firm_id=world.firm_id, name="24h")
    alerts.add_shift(db, roster_id=roster, technician_id=expiring, start=now, end=now + 48 * H)
    assert alerts_scheduled.check_rosters(db, now=now, horizon=24 * H) == 1
    [alarm] = alerts.list_alarms(db, type="roster_gap")
    # covered until midnight in Shanghai (16:00 UTC), a gap after
    [group] = alarm.details["uncovered"]
    assert group["timezone"] == "Asia/Shanghai" and group["elevators"] == 2
    assert group["gaps"] == [["2026-01-05T16:00:00+00:00", "2026-01-06T08:00:00+00:00"]]
    # a qualified colleague covers it
    valid = add_technician(db, firm_id=world.firm_id, name="valid", latitude=31.2, longitude=121.4)
    alerts.add_shift(db, roster_id=roster, technician_id=valid, start=now, end=now + 48 * H)
    assert alerts_scheduled.check_rosters(db, now=now, horizon=24 * H) == 0


# -- 8. dwells per jurisdiction; inspection mode suppresses dwell detection (logged) -------------


async def test_dwell_times_come_from_the_jurisdiction_and_are_recorded(
    db_url, db, clock, resources_for
):
    # rule R1
    world = seed(db)
    registry(db).update("jurisdictions", world.jurisdiction_id, rescue_dwell_outside_door_zone_s=10)
    push(db, world.city_lift, clock.now(), **IDLE)
    async with Notices(db_url) as notices, detector(resources_for) as progress:
        stopped_at = clock.advance(5)
        push(db, world.city_lift, stopped_at, **TRAPPED)
        await progress.state_of(world.city_lift)
        clock.advance(10)
        await notices.wait(reported)
    [incident] = incidents(db)
    assert incident["reported_at"] == stopped_at + timedelta(seconds=10)
    [step] = service.steps(db, incident_id=incident["id"])[:1]
    assert step.detail["dwell_s"] == 10


async def test_a_car_in_inspection_mode_is_not_an_entrapment_by_dwell_alone(
    db_url, db, clock, resources_for
):
    # rule R1: the technician drives it from an inspection station; the suppression is logged
    world = seed(db)
    push(db, world.city_lift, clock.now(), **IDLE)
    async with detector(resources_for) as progress:
        push(db, world.city_lift, clock.advance(5), **TRAPPED, service_mode=2)
        await progress.state_of(world.city_lift)
        clock.advance(300)
        # leaving inspection mode starts the dwell afresh: 30 s later it is an entrapment
        left_at = clock.advance(1)
        push(db, world.city_lift, left_at, service_mode=1)
        await progress.state_of(world.city_lift, count=2)
        async with Notices(db_url) as notices:
            clock.advance(30)
            await notices.wait(reported)
    [incident] = incidents(db)
    assert incident["reported_at"] == left_at + timedelta(seconds=30)
    entries = compliance_log.entries(db, subject_type="device", subject_id=world.city_lift)
    [suppressed] = [e for e in entries if e.kind == "rescue.suppressed"]
    assert "inspection" in suppressed.body["reason"]


# -- 9. the accept window is the jurisdiction's, on every path -----------------------------------


def test_the_accept_window_is_the_jurisdictions(db, clock):
    # rule R4
    world = seed(db)
    registry(db).update("jurisdictions", world.jurisdiction_id, rescue_accept_timeout_s=300)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    outcome = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert outcome.dispatch.accept_by == clock.now() + timedelta(seconds=300)
    [step] = [s for s in service.steps(db, incident_id=incident.id) if s.step is Step.DISPATCHED]
    assert step.detail["accept_timeout_s"] == 300
    # accepting after the default 2 minutes but within the jurisdiction's 5 is in time
    flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(200))


# -- 10. a breach reaches the firm's manager ----------------------------------------------------


def test_a_breach_alerts_the_firm_manager(db, clock):
    # rules R5, R6
    world = seed(db)
    crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert flows.deadline_passed(db, incident_id=incident.id, now=clock.advance(30 * 60))
    sent = alerts.deliveries(db, subject_type="rescue_incident", subject_id=incident.id)
    [breach] = [d for d in sent if d.payload.get("kind") == "rescue_breach"]
    assert breach.audience.value == "firm_manager"


# -- 11. who acted, and arrivals without proof --------------------------------------------------


def test_steps_recorded_for_a_technician_name_who_recorded_them(db, clock):
    # rules R6, A1
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    flows.accept(
        db, incident_id=incident.id, technician_id=team.near, at=clock.advance(30), actor="li"
    )
    # the technician phoned in: no position, recorded by the dispatcher, unproven
    done = flows.check_in(
        db,
        technician_id=team.near,
        device_id=world.city_lift,
        at=clock.advance(600),
        latitude=None,
        longitude=None,
        actor="li",
    )
    assert done.arrived
    steps = {s.step: s for s in service.steps(db, incident_id=incident.id)}
    assert steps[Step.ACCEPTED].actor == f"li on behalf of technician:{team.near}"
    assert steps[Step.ARRIVED].actor == f"li on behalf of technician:{team.near}"
    assert steps[Step.ARRIVED].detail["proven"] is False
    logged = compliance_log.entries(db, subject_type="rescue_incident", subject_id=incident.id)
    assert f"li on behalf of technician:{team.near}" in {e.actor for e in logged}


def test_the_technicians_own_position_at_the_site_proves_arrival(db, clock):
    # rule R6
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    done = flows.check_in(
        db,
        technician_id=team.near,
        device_id=world.city_lift,
        at=clock.advance(600),
        latitude=31.2301,
        longitude=121.4701,
    )
    assert done.arrived
    [arrived] = [s for s in service.steps(db, incident_id=incident.id) if s.step is Step.ARRIVED]
    assert arrived.actor == f"technician:{team.near}"
    assert arrived.detail["proven"] is True and arrived.detail["distance_m"] < 300


# -- 12. bad input is refused with a reason, never a server error -------------------------------


def test_accept_after_the_alarm_was_cleared_and_check_in_by_nobody(db, clock):
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    alerts.clear_alarm(db, alarm_id=incident.alarm_id, by="someone", at=clock.now())
    accepted = flows.accept(
        db, incident_id=incident.id, technician_id=team.near, at=clock.advance(10)
    )
    assert accepted.status is Status.ACCEPTED
    with pytest.raises(UnknownTechnician):
        flows.check_in(
            db,
            technician_id=999_999,
            device_id=world.city_lift,
            at=clock.now(),
            latitude=31.23,
            longitude=121.47,
        )
    with pytest.raises(RescueError):
        flows.check_in(
            db,
            technician_id=team.near,
            device_id=world.city_lift,
            at=clock.now(),
            latitude=31.23,
            longitude=None,
        )


# -- 13. KPIs by the site's month -----------------------------------------------------------------


def test_rescue_kpis_count_months_at_the_site(db, clock):
    # rule R7: 2026-01-31 17:00 UTC is 2026-02-01 01:00 in Shanghai
    from datetime import UTC, datetime

    world = seed(db)
    clock.set(datetime(2026, 1, 31, 17, 0, tzinfo=UTC))
    _report(db, world.city_lift, clock)
    [row] = service.kpis(db, firm_id=world.firm_id)
    assert row["month"] == date(2026, 2, 1)


def test_coverage_from_the_shell(db_url, db, clock, monkeypatch, capsys):
    # rule R8: the city lift is minutes from the nearest technician; the rural one is not
    from runtime.cli import main

    world = seed(db)
    crew(db, world=world, start=clock.now())
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    assert main(["rescue", "coverage", "--firm", str(world.firm_id)]) == 1
    out = capsys.readouterr().out
    city = next(line for line in out.splitlines() if line.startswith(world.city_lift))
    rural = next(line for line in out.splitlines() if line.startswith(world.rural_lift))
    assert city.endswith("yes") and rural.endswith("NO")
    assert "2 elevator(s), 1 outside their deadline" in out
