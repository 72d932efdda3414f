import json
from datetime import timedelta

import psycopg
import pytest

from alerts import service as alerts
from compliance.log import service as compliance_log
from compliance.rescue import flows, scheduled, service
from compliance.rescue.flows import StraightLineEstimator
from compliance.rescue.models import RescueError, Status, Step, Trigger
from tests.alerts.harness import Notices, running, settings_for
from tests.alerts.receivers import WebhookReceiver
from tests.alerts.seed import registry, seed
from tests.rescue.crew import crew
from tests.rescue.lift import detector, push

ESTIMATOR = StraightLineEstimator()
MIN = timedelta(minutes=1)


def incident_change(change):
    def match(notice):
        return (
            isinstance(notice, dict)
            and notice.get("kind") == "incident"
            and notice.get("change") == change
        )

    return match


def _report(db, device, clock):
    return flows.report(
        db, device_id=device, trigger=Trigger.MANUAL, at=clock.now(), actor="phone:96333"
    ).incident


def test_the_nearest_qualified_on_call_technician_is_dispatched(db, clock):
    # rules R4, M10, R3
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    outcome = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert outcome.dispatch.technician_id == team.near
    # the expired certificate and the technician off duty are never candidates
    assert [r.candidate.technician_id for r in outcome.ranked] == [team.near, team.far]
    assert outcome.ranked[0].travel_s < outcome.ranked[1].travel_s
    assert not outcome.escalated
    assert outcome.dispatch.accept_by == clock.now() + 2 * MIN
    # a second call while the first awaits an answer does not dispatch anyone else
    again = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert again.dispatch.id == outcome.dispatch.id
    [message] = alerts.deliveries(db, subject_type="rescue_incident", subject_id=incident.id)
    assert message.audience.value == "technician" and message.address == f"technician:{team.near}"


def _levels(db, incident_id):
    return [
        s.detail["audience"]
        for s in service.steps(db, incident_id=incident_id)
        if s.step is Step.ESCALATED
    ]


def test_a_firm_without_a_licence_has_no_candidates_and_escalates_in_stages(db, clock):
    # rules M10, R5: firm manager and property management at once, the fire service after the
    # jurisdiction's delay (default 600 s) when nobody has arrived
    from datetime import date

    world = seed(db, licence_expires=date(2020, 1, 1))
    crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    outcome = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert outcome.dispatch is None and outcome.escalated
    assert _levels(db, incident.id) == ["firm_manager", "property_management"]
    due = flows.fire_service_due(service.steps(db, incident_id=incident.id))
    assert due == clock.now() + timedelta(seconds=600)
    assert not flows.call_fire_service(db, incident_id=incident.id, now=due - timedelta(seconds=1))
    assert flows.call_fire_service(db, incident_id=incident.id, now=due)
    assert not flows.call_fire_service(db, incident_id=incident.id, now=due)  # once
    assert _levels(db, incident.id) == ["firm_manager", "property_management", "fire_service"]
    paths = [
        d.audience.value
        for d in alerts.deliveries(db, subject_type="rescue_incident", subject_id=incident.id)
    ]
    assert "fire_service" in paths and "property_management" in paths


def test_the_fire_service_is_not_called_once_somebody_arrived(db, clock):
    # rule R5: the staged level is dropped when a technician is on site
    world = seed(db)
    team = crew(db, world=world, start=clock.now(), far_away=True)
    incident = _report(db, world.city_lift, clock)
    outcome = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert outcome.escalated and outcome.dispatch.technician_id == team.near
    flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(30))
    flows.inspection_arrival(db, device_id=world.city_lift, at=clock.advance(60))
    assert flows.fire_service_due(service.steps(db, incident_id=incident.id)) is None
    assert not flows.call_fire_service(db, incident_id=incident.id, now=clock.advance(3600))
    assert _levels(db, incident.id) == ["firm_manager", "property_management"]


async def test_redispatch_after_accept_timeout_alerts_the_duty_manager(
    db_url, db, clock, resources_for
):
    # rule R4, end to end from the runner to webhooks
    world = seed(db)
    with WebhookReceiver() as hook:
        team = crew(db, world=world, start=clock.now(), hook=hook.url(""))
        settings = settings_for()
        async with (
            Notices(db_url) as notices,
            resources_for(settings=settings) as resources,
            running(scheduled.run, resources=resources),
        ):
            incident = _report(db, world.city_lift, clock)
            await notices.wait(incident_change("dispatched"))
            clock.advance(119)
            clock.advance(1)
            await notices.wait(incident_change("dispatched"), count=2)
            # the firm hears of the alarm; both technicians and the duty manager are told
            received = await hook.wait_for(4)
            accepted = flows.accept(
                db, incident_id=incident.id, technician_id=team.far, at=clock.advance(30)
            )
    paths = sorted(r.path for r in received)
    assert f"/technician/{team.near}" in paths and f"/technician/{team.far}" in paths
    assert f"/duty_manager/{world.firm_id}" in paths
    duty = next(r for r in received if r.path.startswith("/duty_manager"))
    assert json.loads(duty.body)["technician_id"] == team.near
    sent = service.dispatches(db, incident_id=incident.id)
    assert [(d.technician_id, d.outcome) for d in sent] == [
        (team.near, "timed_out"),
        (team.far, "accepted"),
    ]
    assert sent[1].dispatched_at == sent[0].accept_by
    steps = [s.step for s in service.steps(db, incident_id=incident.id)]
    assert steps == [
        Step.REPORTED,
        Step.DISPATCHED,
        Step.DISPATCH_TIMEOUT,
        Step.DISPATCHED,
        Step.ACCEPTED,
    ]
    assert accepted.status is Status.ACCEPTED
    assert alerts.get_alarm(db, alarm_id=accepted.alarm_id).state.value == "acknowledged"
    # the technician who timed out can no longer accept
    with pytest.raises(RescueError):
        flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.now())


def test_late_accept_is_refused(db, clock):
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    with pytest.raises(RescueError, match="too late"):
        flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(121))
    with pytest.raises(RescueError, match="no dispatch"):
        flows.accept(db, incident_id=incident.id, technician_id=team.far, at=clock.now())
    assert service.get_incident(db, incident_id=incident.id).status is Status.DISPATCHED


def test_infeasible_estimated_arrival_escalates_at_once(db, clock):
    # rule R5
    world = seed(db)
    team = crew(db, world=world, start=clock.now(), far_away=True)
    incident = _report(db, world.rural_lift, clock)
    outcome = flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    # the best candidate is still dispatched; the firm manager and property management are
    # alerted right away, the fire service is staged (rule R5)
    assert outcome.dispatch.technician_id == team.near
    assert outcome.escalated
    assert outcome.dispatch.estimated_arrival > incident.arrival_deadline
    escalations = [
        s for s in service.steps(db, incident_id=incident.id) if s.step is Step.ESCALATED
    ]
    assert [s.detail["level"] for s in escalations] == [1, 2]
    assert all(s.at == clock.now() for s in escalations)
    assert escalations[0].detail["fire_service_after_s"] == 600
    audiences = {
        d.audience.value
        for d in alerts.deliveries(db, subject_type="rescue_incident", subject_id=incident.id)
    }
    assert {"firm_manager", "property_management"} <= audiences
    assert "fire_service" not in audiences
    # escalation happens once per incident
    assert not flows.escalate(db, incident=incident, facts={}, now=clock.now(), reason="again")


def test_a_jurisdiction_without_delay_calls_the_fire_service_at_once(db, clock):
    # rule R5: the delay is the jurisdiction's policy; 0 means every level at once
    world = seed(db)
    registry(db).update("jurisdictions", world.jurisdiction_id, rescue_fire_service_after_s=0)
    crew(db, world=world, start=clock.now(), far_away=True)
    incident = _report(db, world.rural_lift, clock)
    flows.dispatch_next(db, incident_id=incident.id, now=clock.now(), estimator=ESTIMATOR)
    assert _levels(db, incident.id) == ["firm_manager", "property_management", "fire_service"]


def test_deadline_is_30_minutes_in_a_city_and_60_elsewhere(db, clock):
    # rule R2
    world = seed(db)
    city = _report(db, world.city_lift, clock)
    rural = _report(db, world.rural_lift, clock)
    assert (city.tier, city.deadline_minutes) == ("city", 30)
    assert city.arrival_deadline == clock.now() + 30 * MIN
    assert (rural.tier, rural.deadline_minutes) == ("elsewhere", 60)
    assert rural.arrival_deadline == clock.now() + 60 * MIN


def test_a_jurisdiction_may_count_the_deadline_from_dispatch(db, clock):
    # rule R2
    world = seed(db, clock_from="dispatch")
    crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    assert incident.arrival_deadline is None
    dispatched_at = clock.advance(5 * 60)
    flows.dispatch_next(db, incident_id=incident.id, now=dispatched_at, estimator=ESTIMATOR)
    incident = service.get_incident(db, incident_id=incident.id)
    assert incident.arrival_deadline == dispatched_at + 30 * MIN
    # and once set, the deadline never moves
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(
            "UPDATE rescue_incidents SET arrival_deadline = arrival_deadline + "
            "interval '1 hour' WHERE id = %s",
            (incident.id,),
        )


async def test_a_breach_stays_a_breach_after_arrival(db_url, db, clock, resources_for):
    # rule R6
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    async with Notices(db_url) as notices, detector(resources_for):
        incident = _report(db, world.city_lift, clock)
        await notices.wait(incident_change("dispatched"))
        flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(60))
        clock.advance(29 * 60)  # 30 minutes after the report
        await notices.wait(incident_change("breach"))
        arrived = flows.check_in(
            db,
            technician_id=team.near,
            device_id=world.city_lift,
            at=clock.advance(5 * 60),
            latitude=31.2301,
            longitude=121.4701,
        )
    assert arrived.arrived
    [breach] = service.breaches(db, incident_id=incident.id)
    assert breach["deadline"] == incident.arrival_deadline
    assert breach["detected_at"] == incident.arrival_deadline
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM rescue_breaches")
    kinds = [e.kind for e in compliance_log.entries(db, subject_type="rescue_incident")]
    assert kinds.count("rescue.breach") == 1 and kinds[-1] == "rescue.arrived"
    [kpi] = service.kpis(db, firm_id=world.firm_id)
    assert kpi["arrived_within_deadline"] == 0


def test_lifecycle_with_check_in_proof_and_no_breach_when_on_time(db, clock):
    # rule R6
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    incident = _report(db, world.city_lift, clock)
    with pytest.raises(RescueError):
        flows.release(db, incident_id=incident.id, at=clock.now(), actor="x")  # not arrived yet
    flows.dispatch_next(db, incident_id=incident.id, now=clock.advance(10), estimator=ESTIMATOR)
    flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(50))
    far = flows.check_in(
        db,
        technician_id=team.near,
        device_id=world.city_lift,
        at=clock.advance(5 * 60),
        latitude=31.30,
        longitude=121.47,
    )
    assert not far.arrived and "m from the site" in far.reason
    near = flows.check_in(
        db,
        technician_id=team.near,
        device_id=world.city_lift,
        at=clock.advance(10 * 60),
        latitude=31.2302,
        longitude=121.4699,
    )
    assert near.arrived and near.incident.status is Status.ARRIVED
    assert not flows.deadline_passed(db, incident_id=incident.id, now=clock.advance(30 * 60))
    flows.release(db, incident_id=incident.id, at=clock.now(), actor=f"technician:{team.near}")
    closed = flows.close(db, incident_id=incident.id, at=clock.advance(60), actor="dispatcher")
    assert closed.status is Status.CLOSED
    history = service.steps(db, incident_id=incident.id)
    assert [s.step for s in history] == [
        Step.REPORTED,
        Step.DISPATCHED,
        Step.ACCEPTED,
        Step.ARRIVED,
        Step.RELEASED,
        Step.CLOSED,
    ]
    assert [s.at for s in history] == sorted(s.at for s in history)
    assert history[3].detail["proof"] == "check_in"
    logged = compliance_log.entries(db, subject_type="rescue_incident", subject_id=incident.id)
    assert [e.kind for e in logged] == [f"rescue.{s.step.value}" for s in history]
    assert service.breaches(db, incident_id=incident.id) == []
    [kpi] = service.kpis(db)
    assert kpi["answered_within_3_min"] == 1 and kpi["arrived_within_deadline"] == 1
    assert kpi["mean_arrival_min"] == pytest.approx(16.0)


async def test_inspection_mode_at_the_car_proves_arrival(db_url, db, clock, resources_for):
    # rule R6
    world = seed(db)
    team = crew(db, world=world, start=clock.now())
    async with Notices(db_url) as notices, detector(resources_for):
        incident = _report(db, world.city_lift, clock)
        await notices.wait(incident_change("dispatched"))
        flows.accept(db, incident_id=incident.id, technician_id=team.near, at=clock.advance(30))
        push(db, world.city_lift, clock.advance(12 * 60), service_mode=2)
        await notices.wait(incident_change("arrived"))
    [arrival] = [s for s in service.steps(db, incident_id=incident.id) if s.step is Step.ARRIVED]
    assert arrival.actor == "controller" and arrival.detail["proof"] == "inspection_mode"
    assert arrival.technician_id == team.near


def test_coverage_report(db, clock):
    # rule R8
    world = seed(db)
    crew(db, world=world, start=clock.now())
    db.execute(
        "INSERT INTO service_points (firm_id, name, latitude, longitude) "
        "VALUES (%s, 'service point Pudong', 31.24, 121.48)",
        (world.firm_id,),
    )
    rows = {r.device_id: r for r in flows.coverage(db, estimator=ESTIMATOR)}
    assert rows[world.city_lift].within_deadline
    assert rows[world.city_lift].deadline_minutes == 30
    assert rows[world.rural_lift].deadline_minutes == 60
    assert rows[world.rural_lift].travel_minutes > rows[world.city_lift].travel_minutes
    [load] = [
        f for f in service.firm_loads(db, today=clock.now().date()) if f.firm_id == world.firm_id
    ]
    assert (load.elevators, load.technicians) == (2, 3)  # the expired certificate does not count
