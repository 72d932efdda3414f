"""Rescue decisions: detection conditions (R1), deadlines (R2), ranking and feasibility (R4, R5)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from alerts import service as alerts
from alerts.models import Audience, PartyType, Severity
from compliance.rescue import service
from compliance.rescue.models import (
    Candidate,
    CheckIn,
    Condition,
    CoverageRow,
    DispatchOutcome,
    Incident,
    LiftState,
    Opened,
    Place,
    Ranked,
    RescueError,
    Status,
    Step,
    TravelEstimator,
    Trigger,
)
from vigil.catalog import CarStatus, DoorState

ENTRAPMENT_ALARM = "entrapment"

# rule R1 dwell times
STOPPED_OUTSIDE_DWELL_S = 30.0
TRAPPED_AT_FLOOR_DWELL_S = 120.0
# rule R4: a technician accepts within this, or the next candidate is dispatched
ACCEPT_WITHIN_S = 120.0
# a check-in counts as arrival within this distance of the site
ARRIVAL_RADIUS_M = 300.0

EARTH_RADIUS_M = 6_371_000.0

# rule R6: which status each step moves an incident from
NEXT_STATUS: dict[Status, frozenset[Status]] = {
    Status.DISPATCHED: frozenset({Status.REPORTED, Status.DISPATCHED}),
    Status.ACCEPTED: frozenset({Status.DISPATCHED}),
    Status.ARRIVED: frozenset({Status.DISPATCHED, Status.ACCEPTED}),
    Status.RELEASED: frozenset({Status.ARRIVED}),
    Status.CLOSED: frozenset({Status.RELEASED}),
    Status.FALSE_ALARM: frozenset(
        {Status.REPORTED, Status.DISPATCHED, Status.ACCEPTED, Status.ARRIVED}
    ),
}


def _is(state: LiftState, metric: str, value: float) -> bool:
    found = state.value(metric)
    return found is not None and found == value


def at_landing_doors_open(state: LiftState) -> bool:
    """The car is in a door zone with its doors open: people can walk out."""
    return _is(state, "door_zone", 1) and _is(state, "door_state", DoorState.OPEN)


def alarm_button_means_entrapment(state: LiftState) -> bool:
    """Rule R1: the alarm button counts unless the car is at a landing with doors open."""
    return not at_landing_doors_open(state)


def _since(state: LiftState, metrics: Sequence[str], now: datetime) -> datetime:
    """The condition began when the last of its metrics changed (never later than now)."""
    known = [state.changed_at[m] for m in metrics if m in state.changed_at]
    return min(max(known), now) if known else now


def dwell_condition(state: LiftState, *, now: datetime) -> Condition | None:
    """The rule R1 dwell condition that holds now, if any."""
    if not _is(state, "passengers", 1) or not _is(state, "car_status", CarStatus.STOPPED):
        return None
    if _is(state, "door_zone", 0):
        since = _since(state, ("passengers", "car_status", "door_zone"), now)
        return Condition(Trigger.STOPPED_OUTSIDE_DOOR_ZONE, since, STOPPED_OUTSIDE_DWELL_S)
    if _is(state, "door_zone", 1) and _is(state, "door_state", DoorState.CLOSED):
        since = _since(state, ("passengers", "car_status", "door_zone", "door_state"), now)
        return Condition(Trigger.TRAPPED_AT_FLOOR, since, TRAPPED_AT_FLOOR_DWELL_S)
    return None


def arrival_deadline(
    *,
    reported_at: datetime,
    dispatched_at: datetime | None,
    minutes: int,
    clock_from: str,
) -> datetime | None:
    """Rule R2: the deadline counts from the report, or from dispatch where so configured."""
    start = reported_at if clock_from == "report" else dispatched_at
    return None if start is None else start + timedelta(minutes=minutes)


def deadline_minutes(*, tier: str, city_minutes: int, elsewhere_minutes: int) -> int:
    """Rule R2: the jurisdiction's deadline for a site's tier."""
    return city_minutes if tier == "city" else elsewhere_minutes


def distance_m(a: Place, b: Place) -> float:
    """Great-circle distance in metres (haversine)."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


@dataclass(frozen=True)
class StraightLineEstimator:
    """Distance times a detour factor, at a speed per site tier (the default estimator)."""

    speed_kmh: Mapping[str, float] = field(
        default_factory=lambda: {"city": 25.0, "elsewhere": 50.0}
    )
    detour_factor: float = 1.4
    setup_s: float = 120.0  # getting to the vehicle

    def travel_seconds(self, *, origin: Place, destination: Place, tier: str) -> float:
        """Seconds from origin to destination."""
        metres = distance_m(origin, destination) * self.detour_factor
        return self.setup_s + metres / (self.speed_kmh[tier] * 1000 / 3600)


def rank(
    *,
    candidates: Sequence[Candidate],
    site: Place,
    tier: str,
    estimator: TravelEstimator,
) -> list[Ranked]:
    """Rule R4: candidates by estimated travel time, shortest first (ties by id)."""
    ranked = [
        Ranked(c, estimator.travel_seconds(origin=c.location, destination=site, tier=tier))
        for c in candidates
    ]
    return sorted(ranked, key=lambda r: (r.travel_s, r.candidate.technician_id))


def feasible(*, now: datetime, travel_s: float, deadline: datetime | None) -> bool:
    """Rule R5: whether the best estimate still arrives by the deadline."""
    return deadline is None or now + timedelta(seconds=travel_s) <= deadline


def within_arrival_radius(*, at: Place, site: Place) -> bool:
    """A check-in this close to the site proves arrival."""
    return distance_m(at, site) <= ARRIVAL_RADIUS_M


def check_transition(*, current: Status, to: Status) -> str | None:
    """Why an incident in ``current`` cannot move to ``to`` (None when it can)."""
    allowed = NEXT_STATUS.get(to, frozenset())
    if current in allowed:
        return None
    return f"an incident that is {current.value} cannot become {to.value}"


# -- actions: each runs in one transaction of the caller's connection ------------------------------


def _today(*, now: datetime, timezone: str) -> date:
    """The calendar date at the site (qualifications are valid through a date)."""
    return now.astimezone(ZoneInfo(timezone)).date()


def report(
    conn: psycopg.Connection,
    *,
    device_id: str,
    trigger: Trigger,
    at: datetime,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> Opened:
    """Rule R1: open an incident for an entrapment signal, or attach it to the open one."""
    for _ in range(3):
        with conn.transaction():
            facts = service.site_facts(conn, device_id=device_id)
            if facts["kind"] != "elevator":
                raise RescueError(f"{device_id} is a {facts['kind']}, not an elevator")
            minutes = deadline_minutes(
                tier=facts["tier"],
                city_minutes=facts["rescue_minutes_city"],
                elsewhere_minutes=facts["rescue_minutes_elsewhere"],
            )
            clock_from = facts["rescue_clock_from"]
            incident = service.insert_incident(
                conn,
                device_id=device_id,
                site_id=facts["site_id"],
                firm_id=facts["firm_id"],
                jurisdiction_id=facts["jurisdiction_id"],
                trigger=trigger,
                tier=facts["tier"],
                deadline_minutes=minutes,
                clock_from=clock_from,
                reported_at=at,
                arrival_deadline=arrival_deadline(
                    reported_at=at, dispatched_at=None, minutes=minutes, clock_from=clock_from
                ),
            )
            if incident is None:
                existing = service.open_incident_of(conn, device_id=device_id, lock=True)
                if existing is None:
                    continue  # closed in the meantime: open a new one
                service.add_step(
                    conn,
                    incident_id=existing.id,
                    step=Step.SIGNAL,
                    at=at,
                    actor=actor,
                    detail={"trigger": trigger.value, **(detail or {})},
                )
                return Opened(existing, created=False)
            service.add_step(
                conn,
                incident_id=incident.id,
                step=Step.REPORTED,
                at=at,
                actor=actor,
                detail={
                    "trigger": trigger.value,
                    "device_id": device_id,
                    "tier": incident.tier,
                    "deadline_minutes": minutes,
                    "clock_from": clock_from,
                    "arrival_deadline": incident.arrival_deadline,
                    **(detail or {}),
                },
            )
            alarm = alerts.raise_alarm(
                conn,
                source_type="device",
                source_id=device_id,
                type=ENTRAPMENT_ALARM,
                severity=Severity.CRITICAL,
                message=f"passengers trapped in {device_id} ({trigger.value.replace('_', ' ')})",
                audience=[Audience.FIRM, Audience.USER_UNIT],
                at=at,
                details={"incident_id": incident.id, "trigger": trigger.value},
                actor=actor,
            )
            incident = service.update_incident(conn, incident_id=incident.id, alarm_id=alarm.id)
            service.announce(conn, incident=incident, change="reported")
            return Opened(incident, created=True)
    raise RescueError(f"could not open an incident for {device_id}")  # pragma: no cover


def dispatch_next(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    now: datetime,
    estimator: TravelEstimator,
    accept_within_s: float = ACCEPT_WITHIN_S,
) -> DispatchOutcome:
    """Rules R4, R5: dispatch the best remaining candidate; escalate when none can make it."""
    with conn.transaction():
        incident = service.get_incident(conn, incident_id=incident_id, lock=True)
        if not incident.open or incident.status not in (Status.REPORTED, Status.DISPATCHED):
            return DispatchOutcome(None, False, f"incident is {incident.status.value}")
        waiting = service.awaiting_answer(conn, incident_id=incident.id)
        if waiting is not None:
            return DispatchOutcome(waiting, False, "a dispatch awaits an answer")
        facts = service.site_facts(conn, device_id=incident.device_id)
        site = Place(facts["latitude"], facts["longitude"])
        found = service.candidates(
            conn, incident=incident, at=now, today=_today(now=now, timezone=facts["timezone"])
        )
        ranked = rank(candidates=found, site=site, tier=incident.tier, estimator=estimator)
        if not ranked:
            escalated = escalate(
                conn,
                incident=incident,
                facts=facts,
                now=now,
                reason="no qualified on-call technician left to dispatch",
            )
            service.announce(conn, incident=incident, change="no_candidate")
            return DispatchOutcome(None, escalated, "no candidate")
        best = ranked[0]
        number = len(service.dispatches(conn, incident_id=incident.id)) + 1
        arrival = now + timedelta(seconds=best.travel_s)
        dispatch = service.insert_dispatch(
            conn,
            incident_id=incident.id,
            technician_id=best.candidate.technician_id,
            rank=number,
            travel_s=best.travel_s,
            estimated_arrival=arrival,
            dispatched_at=now,
            accept_by=now + timedelta(seconds=accept_within_s),
        )
        deadline = incident.arrival_deadline or arrival_deadline(
            reported_at=incident.reported_at,
            dispatched_at=now,
            minutes=incident.deadline_minutes,
            clock_from=incident.clock_from,
        )
        incident = service.update_incident(
            conn, incident_id=incident.id, status=Status.DISPATCHED, arrival_deadline=deadline
        )
        service.add_step(
            conn,
            incident_id=incident.id,
            step=Step.DISPATCHED,
            at=now,
            actor="dispatcher",
            technician_id=best.candidate.technician_id,
            detail={
                "rank": number,
                "estimated_travel_s": round(best.travel_s, 1),
                "estimated_arrival": arrival,
                "accept_by": dispatch.accept_by,
                "arrival_deadline": deadline,
                "candidates": [
                    [r.candidate.technician_id, round(r.travel_s, 1)] for r in ranked[:10]
                ],
            },
        )
        alerts.notify_party(
            conn,
            party_type=PartyType.TECHNICIAN,
            party_id=best.candidate.technician_id,
            audience=Audience.TECHNICIAN,
            subject_type=service.SUBJECT,
            subject_id=incident.id,
            reason="rescue dispatch",
            payload={
                "kind": "rescue_dispatch",
                "incident_id": incident.id,
                "device_id": incident.device_id,
                "site": {"latitude": site.latitude, "longitude": site.longitude},
                "message": f"passengers trapped in {incident.device_id}: accept and go",
                "accept_by": dispatch.accept_by.isoformat(),
                "arrival_deadline": deadline.isoformat() if deadline else None,
                "estimated_travel_s": round(best.travel_s, 1),
                "reported_at": incident.reported_at.isoformat(),
            },
            at=now,
            alarm_id=incident.alarm_id,
        )
        escalated = False
        if not feasible(now=now, travel_s=best.travel_s, deadline=deadline):
            escalated = escalate(
                conn,
                incident=incident,
                facts=facts,
                now=now,
                reason=f"best estimated arrival {arrival.isoformat()} misses the deadline "
                f"{deadline.isoformat() if deadline else ''}",
            )
        service.announce(conn, incident=incident, change="dispatched")
        return DispatchOutcome(dispatch, escalated, "", ranked)


# rule R5: the backup levels, in order, and which party each reaches
BACKUP_LEVELS: tuple[tuple[Audience, PartyType, str], ...] = (
    (Audience.FIRM_MANAGER, PartyType.FIRM, "firm_id"),
    (Audience.PROPERTY_MANAGEMENT, PartyType.USER_UNIT, "user_unit_id"),
    (Audience.FIRE_SERVICE, PartyType.JURISDICTION, "jurisdiction_id"),
)


def escalate(
    conn: psycopg.Connection,
    *,
    incident: Incident,
    facts: dict[str, Any],
    now: datetime,
    reason: str,
) -> bool:
    """Rule R5: alert every backup level at once, in order; once per incident."""
    if service.has_step(conn, incident_id=incident.id, step=Step.ESCALATED):
        return False
    for level, (audience, party_type, key) in enumerate(BACKUP_LEVELS, start=1):
        service.add_step(
            conn,
            incident_id=incident.id,
            step=Step.ESCALATED,
            at=now,
            actor="rescue",
            detail={"level": level, "audience": audience.value, "reason": reason},
        )
        if facts.get(key) is not None:
            alerts.notify_party(
                conn,
                party_type=party_type,
                party_id=facts[key],
                audience=audience,
                subject_type=service.SUBJECT,
                subject_id=incident.id,
                reason=f"rescue escalation level {level}",
                payload={
                    "kind": "rescue_escalation",
                    "incident_id": incident.id,
                    "device_id": incident.device_id,
                    "level": level,
                    "message": f"entrapment in {incident.device_id}: {reason}",
                },
                at=now,
                alarm_id=incident.alarm_id,
            )
    return True


def accept_timed_out(
    conn: psycopg.Connection,
    *,
    dispatch_id: int,
    now: datetime,
    estimator: TravelEstimator,
    accept_within_s: float = ACCEPT_WITHIN_S,
) -> DispatchOutcome | None:
    """Rule R4: no answer in time: alert the duty manager and dispatch the next candidate."""
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "UPDATE rescue_dispatches SET outcome = 'timed_out', outcome_at = %(now)s "
                "WHERE id = %(id)s AND outcome IS NULL AND accept_by <= %(now)s "
                "RETURNING incident_id, technician_id, accept_by",
                {"id": dispatch_id, "now": now},
            ).fetchone()
        if row is None:
            return None  # answered in time, or handled by another engine
        incident = service.get_incident(conn, incident_id=row["incident_id"], lock=True)
        service.add_step(
            conn,
            incident_id=incident.id,
            step=Step.DISPATCH_TIMEOUT,
            at=now,
            actor="rescue",
            technician_id=row["technician_id"],
            detail={"accept_by": row["accept_by"]},
        )
        if incident.firm_id is not None:
            alerts.notify_party(
                conn,
                party_type=PartyType.FIRM,
                party_id=incident.firm_id,
                audience=Audience.DUTY_MANAGER,
                subject_type=service.SUBJECT,
                subject_id=incident.id,
                reason="rescue dispatch not accepted",
                payload={
                    "kind": "rescue_accept_timeout",
                    "incident_id": incident.id,
                    "device_id": incident.device_id,
                    "technician_id": row["technician_id"],
                    "message": f"technician {row['technician_id']} did not accept the rescue "
                    f"dispatch for {incident.device_id} in time; dispatching the next",
                },
                at=now,
                alarm_id=incident.alarm_id,
            )
        return dispatch_next(
            conn,
            incident_id=incident.id,
            now=now,
            estimator=estimator,
            accept_within_s=accept_within_s,
        )


def _transition(conn: psycopg.Connection, *, incident_id: int, to: Status) -> Incident:
    incident = service.get_incident(conn, incident_id=incident_id, lock=True)
    problem = check_transition(current=incident.status, to=to)
    if problem:
        raise RescueError(f"incident {incident_id}: {problem}")
    return incident


def accept(
    conn: psycopg.Connection, *, incident_id: int, technician_id: int, at: datetime
) -> Incident:
    """Rule R4: the dispatched technician accepts, within the time allowed."""
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.ACCEPTED)
        waiting = service.awaiting_answer(conn, incident_id=incident_id)
        if waiting is None or waiting.technician_id != technician_id:
            raise RescueError(
                f"technician {technician_id} has no dispatch awaiting an answer "
                f"for incident {incident_id}"
            )
        if at > waiting.accept_by:
            raise RescueError(
                f"too late: the dispatch had to be accepted by {waiting.accept_by.isoformat()}"
            )
        service.answer_dispatch(conn, dispatch_id=waiting.id, outcome="accepted", at=at)
        actor = f"technician:{technician_id}"
        service.add_step(
            conn,
            incident_id=incident_id,
            step=Step.ACCEPTED,
            at=at,
            actor=actor,
            technician_id=technician_id,
        )
        if incident.alarm_id is not None:
            alerts.acknowledge_alarm(conn, alarm_id=incident.alarm_id, by=actor, at=at)
        incident = service.update_incident(conn, incident_id=incident_id, status=Status.ACCEPTED)
        service.announce(conn, incident=incident, change="accepted")
        return incident


def _arrive(
    conn: psycopg.Connection,
    *,
    incident: Incident,
    at: datetime,
    actor: str,
    technician_id: int | None,
    evidence: dict[str, Any],
) -> Incident:
    problem = check_transition(current=incident.status, to=Status.ARRIVED)
    if problem:
        raise RescueError(f"incident {incident.id}: {problem}")
    service.add_step(
        conn,
        incident_id=incident.id,
        step=Step.ARRIVED,
        at=at,
        actor=actor,
        technician_id=technician_id,
        detail=evidence,
    )
    # rule R6: a late arrival is a breach, even if no timer saw the deadline pass
    if incident.arrival_deadline is not None and at > incident.arrival_deadline:
        service.record_breach(
            conn, incident_id=incident.id, deadline=incident.arrival_deadline, detected_at=at
        )
    incident = service.update_incident(conn, incident_id=incident.id, status=Status.ARRIVED)
    service.announce(conn, incident=incident, change="arrived")
    return incident


def check_in(
    conn: psycopg.Connection,
    *,
    technician_id: int,
    device_id: str,
    at: datetime,
    latitude: float,
    longitude: float,
) -> CheckIn:
    """A technician reports their location; at the site of their incident it proves arrival."""
    place = Place(latitude, longitude)
    with conn.transaction():
        service.save_location(conn, technician_id=technician_id, place=place, at=at)
        incident = service.open_incident_of(conn, device_id=device_id, lock=True)
        if incident is None:
            return CheckIn(None, False, f"no open incident on {device_id}")
        sent = [
            d.technician_id
            for d in service.dispatches(conn, incident_id=incident.id)
            if d.outcome in (None, "accepted")
        ]
        if technician_id not in sent:
            return CheckIn(incident, False, f"technician {technician_id} was not dispatched")
        facts = service.site_facts(conn, device_id=device_id)
        site = Place(facts["latitude"], facts["longitude"])
        metres = distance_m(place, site)
        if metres > ARRIVAL_RADIUS_M:
            return CheckIn(incident, False, f"{metres:.0f} m from the site")
        if incident.status not in NEXT_STATUS[Status.ARRIVED]:
            return CheckIn(incident, False, f"incident is {incident.status.value}")
        incident = _arrive(
            conn,
            incident=incident,
            at=at,
            actor=f"technician:{technician_id}",
            technician_id=technician_id,
            evidence={"proof": "check_in", "distance_m": round(metres, 1)},
        )
        return CheckIn(incident, True, "")


def inspection_arrival(
    conn: psycopg.Connection, *, device_id: str, at: datetime
) -> Incident | None:
    """Rule R6: the controller switched to inspection at that car proves someone arrived."""
    with conn.transaction():
        incident = service.open_incident_of(conn, device_id=device_id, lock=True)
        if incident is None or incident.status not in NEXT_STATUS[Status.ARRIVED]:
            return None
        sent = service.accepted_dispatch(conn, incident_id=incident.id) or service.awaiting_answer(
            conn, incident_id=incident.id
        )
        return _arrive(
            conn,
            incident=incident,
            at=at,
            actor="controller",
            technician_id=sent.technician_id if sent else None,
            evidence={"proof": "inspection_mode"},
        )


def release(conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str) -> Incident:
    """Rule R6: the passengers are out."""
    with conn.transaction():
        _transition(conn, incident_id=incident_id, to=Status.RELEASED)
        service.add_step(conn, incident_id=incident_id, step=Step.RELEASED, at=at, actor=actor)
        incident = service.update_incident(conn, incident_id=incident_id, status=Status.RELEASED)
        service.announce(conn, incident=incident, change="released")
        return incident


def close(conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str) -> Incident:
    """Rule R6: the incident is over; its alarm clears."""
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.CLOSED)
        service.add_step(conn, incident_id=incident_id, step=Step.CLOSED, at=at, actor=actor)
        return _finish(conn, incident=incident, status=Status.CLOSED, at=at, actor=actor)


def close_false_alarm(
    conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str, reason: str
) -> Incident:
    """Rule R1: nobody was trapped; the incident closes as a false alarm, logged with why."""
    if not reason.strip():
        raise RescueError("closing as a false alarm needs a reason")
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.FALSE_ALARM)
        waiting = service.awaiting_answer(conn, incident_id=incident_id)
        if waiting is not None:
            service.answer_dispatch(conn, dispatch_id=waiting.id, outcome="cancelled", at=at)
        service.add_step(
            conn,
            incident_id=incident_id,
            step=Step.FALSE_ALARM,
            at=at,
            actor=actor,
            detail={"reason": reason},
        )
        return _finish(conn, incident=incident, status=Status.FALSE_ALARM, at=at, actor=actor)


def _finish(
    conn: psycopg.Connection, *, incident: Incident, status: Status, at: datetime, actor: str
) -> Incident:
    if incident.alarm_id is not None:
        alerts.clear_alarm(conn, alarm_id=incident.alarm_id, by=actor, at=at, reason=status.value)
    incident = service.update_incident(conn, incident_id=incident.id, status=status, closed_at=at)
    service.announce(conn, incident=incident, change=status.value)
    return incident


def deadline_passed(conn: psycopg.Connection, *, incident_id: int, now: datetime) -> bool:
    """Rule R6: nobody arrived by the deadline: record the breach (once)."""
    with conn.transaction():
        incident = service.get_incident(conn, incident_id=incident_id, lock=True)
        deadline = incident.arrival_deadline
        if deadline is None or now < deadline or incident.status is Status.FALSE_ALARM:
            return False
        if service.has_step(conn, incident_id=incident_id, step=Step.ARRIVED):
            return False
        recorded = service.record_breach(
            conn, incident_id=incident_id, deadline=deadline, detected_at=now
        )
        if recorded:
            service.announce(conn, incident=incident, change="breach")
        return recorded


def coverage(conn: psycopg.Connection, *, estimator: TravelEstimator) -> list[CoverageRow]:
    """Rule R8: each contracted elevator's travel time from its firm's nearest service point."""
    elevators = service.contracted_elevators(conn)
    points = service.service_points(conn)
    nearest: dict[str, tuple[str | None, float | None]] = {}
    for e in elevators:
        site = Place(e["latitude"], e["longitude"])
        options = [
            (estimator.travel_seconds(origin=p, destination=site, tier=e["tier"]) / 60, name)
            for name, p in points.get(e["firm_id"], [])
        ]
        if options:
            minutes, name = min(options)
            nearest[e["device_id"]] = (name, round(minutes, 1))
    return service.coverage_rows(elevators=elevators, nearest=nearest)
