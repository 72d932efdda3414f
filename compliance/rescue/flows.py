"""Rescue decisions: detection conditions (R1), deadlines (R2), ranking and feasibility (R4, R5)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts import service as alerts
from alerts.models import ENTRAPMENT_ALARM, AlarmState, Audience, PartyType, Severity
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
    StillTrapped,
    TravelEstimator,
    Trigger,
    UnknownTechnician,
)
from vigil.catalog import CarStatus, DoorState, FaultCode, ServiceMode

# rule R1: a controller fault that needs repair (GB/T 24476 codes 1-10 other than 4)
FAULT_ALARM = "controller_fault"

# rule R1: controller codes that are an entrapment by themselves (GB/T 24476)
ENTRAPMENT_FAULT_CODES = frozenset(
    {FaultCode.STOPPED_OUTSIDE_UNLOCKING_ZONE, FaultCode.TRAPPED_PASSENGER}
)
# codes 1-10 that are not an entrapment by themselves: a fault alarm
REPAIR_FAULT_CODES = frozenset(range(1, 11)) - ENTRAPMENT_FAULT_CODES
# with passengers in the car, these codes mean they cannot get out
TRAPPING_FAULT_CODES = frozenset({FaultCode.DOOR_OPEN_FAULT, *ENTRAPMENT_FAULT_CODES})

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
    """The rule R1 dwell condition that holds now, if any (dwells from the jurisdiction)."""
    if not _is(state, "passengers", 1) or not _is(state, "car_status", CarStatus.STOPPED):
        return None
    if _is(state, "door_zone", 0):
        # service_mode counts: leaving inspection mode starts the dwell afresh
        since = _since(state, ("passengers", "car_status", "door_zone", "service_mode"), now)
        return Condition(Trigger.STOPPED_OUTSIDE_DOOR_ZONE, since, state.dwell_outside_door_zone_s)
    if _is(state, "door_zone", 1) and _is(state, "door_state", DoorState.CLOSED):
        since = _since(
            state, ("passengers", "car_status", "door_zone", "door_state", "service_mode"), now
        )
        return Condition(Trigger.TRAPPED_AT_FLOOR, since, state.dwell_at_floor_s)
    return None


def dwell_suppressed(state: LiftState) -> str | None:
    """Rule R1: why a dwell condition is not an entrapment now, or None when it is.

    A car in inspection mode is driven from an inspection station by a technician, who is with
    it: standing still between floors is then work, not an entrapment. The alarm button and the
    controller's trapped-passenger codes still count.
    """
    if _is(state, "service_mode", ServiceMode.INSPECTION):
        return "car in inspection mode: a technician is operating it"
    return None


def entrapment_fault(state: LiftState) -> int | None:
    """Rule R1: the controller's own entrapment code (GB/T 24476 4 or 11), if it reports one."""
    code = state.value("fault_code")
    return int(code) if code is not None and code in ENTRAPMENT_FAULT_CODES else None


def still_trapped(state: LiftState | None, *, now: datetime) -> str | None:
    """Rule R6: why the controller says somebody is still trapped, or None.

    Used before an incident is released, closed or found a false alarm: the platform does not
    take the caller's word while its own latest state says otherwise.
    """
    if state is None:
        return None
    code = state.value("fault_code")
    if code == FaultCode.TRAPPED_PASSENGER:
        return "the controller still reports a trapped passenger (fault code 11)"
    if not _is(state, "passengers", 1):
        return None
    if code is not None and code in TRAPPING_FAULT_CODES:
        return f"passengers are still in the car and the controller reports fault code {int(code)}"
    condition = dwell_condition(state, now=now)
    if condition is not None:
        where = condition.trigger.value.replace("_", " ")
        return f"passengers are still in the car ({where})"
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


def _open(
    conn: psycopg.Connection,
    *,
    facts: dict[str, Any],
    trigger: Trigger,
    at: datetime,
    follows: int | None,
) -> Incident | None:
    """Insert an incident with the jurisdiction's deadline for the site's tier (rule R2)."""
    minutes = deadline_minutes(
        tier=facts["tier"],
        city_minutes=facts["rescue_minutes_city"],
        elsewhere_minutes=facts["rescue_minutes_elsewhere"],
    )
    clock_from = facts["rescue_clock_from"]
    return service.insert_incident(
        conn,
        device_id=facts["device_id"],
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
        follows_incident_id=follows,
    )


def report(
    conn: psycopg.Connection,
    *,
    device_id: str,
    trigger: Trigger,
    at: datetime,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> Opened:
    """Rule R1: open an incident for an entrapment signal, or attach it to the open one.

    ``at`` is when the signal was received (for a press found after a restart, when it was
    pressed), so the deadline counts from then (rule R2). A signal on an incident whose
    passengers were already released means people are trapped again: that incident closes and
    a new one opens with its own dispatch and deadline.
    """
    for _ in range(3):
        with conn.transaction():
            facts = service.site_facts(conn, device_id=device_id)
            if facts["kind"] != "elevator":
                raise RescueError(f"{device_id} is a {facts['kind']}, not an elevator")
            incident = _open(conn, facts=facts, trigger=trigger, at=at, follows=None)
            follows: int | None = None
            if incident is None:
                existing = service.open_incident_of(conn, device_id=device_id, lock=True)
                if existing is None:
                    continue  # closed in the meantime: open a new one
                if existing.status is not Status.RELEASED:
                    service.add_step(
                        conn,
                        incident_id=existing.id,
                        step=Step.SIGNAL,
                        at=at,
                        actor=actor,
                        detail={"trigger": trigger.value, **(detail or {})},
                    )
                    return Opened(existing, created=False)
                # rule R1: trapped again after release: a new rescue, never just a note
                service.add_step(
                    conn,
                    incident_id=existing.id,
                    step=Step.CLOSED,
                    at=at,
                    actor="rescue",
                    detail={"reason": "passengers trapped again", "trigger": trigger.value},
                )
                _finish(conn, incident=existing, status=Status.CLOSED, at=at, actor="rescue")
                follows = existing.id
                incident = _open(conn, facts=facts, trigger=trigger, at=at, follows=follows)
                if incident is None:
                    continue
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
                    "deadline_minutes": incident.deadline_minutes,
                    "clock_from": incident.clock_from,
                    "arrival_deadline": incident.arrival_deadline,
                    "follows_incident_id": follows,
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


def controller_fault(conn: psycopg.Connection, *, device_id: str, code: int, at: datetime) -> bool:
    """Rule R1: a controller fault that needs repair (GB/T 24476 codes 1-10 but 4) raises a
    fault alarm to the firm and the user unit; code 0 clears it. True when something changed.

    Codes 4 and 11 are entrapments and open an incident instead (``report``).
    """
    with conn.transaction():
        if code in REPAIR_FAULT_CODES:
            found = alerts.open_alarm(
                conn, source_type="device", source_id=device_id, type=FAULT_ALARM
            )
            if found is not None and found.details.get("fault_code") == code:
                return False  # the same fault, reported again
            name = FaultCode(code).name.lower().replace("_", " ")
            details = {"fault_code": code, "fault": name, "rule": "R1"}
            alarm = alerts.raise_alarm(
                conn,
                source_type="device",
                source_id=device_id,
                type=FAULT_ALARM,
                severity=Severity.MAJOR,
                message=f"{device_id}: controller fault {code} ({name})",
                audience=[Audience.FIRM, Audience.USER_UNIT],
                at=at,
                details=details,
                actor="detector",
            )
            service.log_device_fact(
                conn,
                kind="alarm.raised",
                device_id=device_id,
                body={"alarm_id": alarm.id, "type": FAULT_ALARM, **details},
                at=at,
            )
            return True
        if code == FaultCode.NONE:
            cleared = alerts.clear_alarms_of(
                conn,
                source_type="device",
                source_id=device_id,
                type=FAULT_ALARM,
                by="detector",
                at=at,
                reason="the controller reports no fault",
            )
            if cleared is not None:
                service.log_device_fact(
                    conn,
                    kind="alarm.cleared",
                    device_id=device_id,
                    body={"alarm_id": cleared.id, "type": FAULT_ALARM},
                    at=at,
                )
            return cleared is not None
    return False


def log_suppression(
    conn: psycopg.Connection, *, device_id: str, condition: Condition, reason: str, at: datetime
) -> None:
    """Rule R1: a dwell condition that was not treated as an entrapment, and why (rule A1)."""
    with conn.transaction():
        service.log_device_fact(
            conn,
            kind="rescue.suppressed",
            device_id=device_id,
            body={
                "trigger": condition.trigger.value,
                "condition_since": condition.since,
                "dwell_s": condition.dwell_s,
                "reason": reason,
            },
            at=at,
        )


def dispatch_next(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    now: datetime,
    estimator: TravelEstimator,
) -> DispatchOutcome:
    """Rules R4, R5: dispatch the best free candidate; escalate when none can make it."""
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
            if incident.arrival_deadline is None:
                # rule R2: a deadline counted from dispatch, with nobody to dispatch, counts from
                # the report instead, so that the case can breach and is never left without one
                incident = service.update_incident(
                    conn,
                    incident_id=incident.id,
                    arrival_deadline=arrival_deadline(
                        reported_at=incident.reported_at,
                        dispatched_at=None,
                        minutes=incident.deadline_minutes,
                        clock_from="report",
                    ),
                )
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
            # rule R4: the jurisdiction's accept window, recorded with the dispatch
            accept_by=now + timedelta(seconds=facts["rescue_accept_timeout_s"]),
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
                "accept_timeout_s": facts["rescue_accept_timeout_s"],
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


# rule R5: the backup levels, in order, and which party each reaches. Levels 1 and 2 are
# alerted at once; level 3 (the fire service) after the jurisdiction's delay, unless somebody
# has arrived by then.
BACKUP_LEVELS: tuple[tuple[Audience, PartyType, str], ...] = (
    (Audience.FIRM_MANAGER, PartyType.FIRM, "firm_id"),
    (Audience.PROPERTY_MANAGEMENT, PartyType.USER_UNIT, "user_unit_id"),
    (Audience.FIRE_SERVICE, PartyType.JURISDICTION, "jurisdiction_id"),
)
FIRE_SERVICE_LEVEL = 3


def _alert_backup_level(
    conn: psycopg.Connection,
    *,
    incident: Incident,
    facts: dict[str, Any],
    level: int,
    now: datetime,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> None:
    audience, party_type, key = BACKUP_LEVELS[level - 1]
    service.add_step(
        conn,
        incident_id=incident.id,
        step=Step.ESCALATED,
        at=now,
        actor="rescue",
        detail={"level": level, "audience": audience.value, "reason": reason, **(detail or {})},
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


def escalate(
    conn: psycopg.Connection,
    *,
    incident: Incident,
    facts: dict[str, Any],
    now: datetime,
    reason: str,
) -> bool:
    """Rule R5: alert the firm manager and property management now, and stage the fire
    service after the jurisdiction's delay (at once when the delay is 0); once per incident."""
    if service.has_step(conn, incident_id=incident.id, step=Step.ESCALATED):
        return False
    delay_s = int(facts["rescue_fire_service_after_s"])
    fire_service_at = now + timedelta(seconds=delay_s)
    for level in range(1, FIRE_SERVICE_LEVEL):
        _alert_backup_level(
            conn,
            incident=incident,
            facts=facts,
            level=level,
            now=now,
            reason=reason,
            detail={"fire_service_after_s": delay_s, "fire_service_at": fire_service_at},
        )
    if delay_s == 0:
        _alert_backup_level(
            conn, incident=incident, facts=facts, level=FIRE_SERVICE_LEVEL, now=now, reason=reason
        )
    return True


def fire_service_due(steps: Sequence[Any]) -> datetime | None:
    """Rule R5: when the fire service is to be called for an incident, or None (not staged,
    already called, or somebody arrived)."""
    levels = {s.detail.get("level") for s in steps if s.step is Step.ESCALATED}
    if FIRE_SERVICE_LEVEL in levels or any(
        s.step in (Step.ARRIVED, Step.RELEASED, Step.CLOSED, Step.FALSE_ALARM) for s in steps
    ):
        return None
    for s in steps:
        if s.step is Step.ESCALATED and s.detail.get("fire_service_at"):
            return datetime.fromisoformat(s.detail["fire_service_at"])
    return None


def call_fire_service(conn: psycopg.Connection, *, incident_id: int, now: datetime) -> bool:
    """Rule R5: the staged last backup level, once its delay passed with nobody on site."""
    with conn.transaction():
        incident = service.get_incident(conn, incident_id=incident_id, lock=True)
        due = fire_service_due(service.steps(conn, incident_id=incident_id))
        if not incident.open or due is None or now < due:
            return False
        facts = service.site_facts(conn, device_id=incident.device_id)
        _alert_backup_level(
            conn,
            incident=incident,
            facts=facts,
            level=FIRE_SERVICE_LEVEL,
            now=now,
            reason=f"nobody on site {int(facts['rescue_fire_service_after_s'])} s after escalation",
        )
        service.announce(conn, incident=incident, change="escalated")
        return True


def accept_timed_out(
    conn: psycopg.Connection,
    *,
    dispatch_id: int,
    now: datetime,
    estimator: TravelEstimator,
) -> DispatchOutcome | None:
    """Rule R4: no answer in time: alert the duty manager and dispatch the next candidate."""
    with conn.transaction():
        row = service.time_out_dispatch(conn, dispatch_id=dispatch_id, now=now)
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
        _tell_firm(
            conn,
            incident=incident,
            audience=Audience.DUTY_MANAGER,
            reason="rescue dispatch not accepted",
            at=now,
            kind="rescue_accept_timeout",
            message=f"technician {row['technician_id']} did not accept the rescue dispatch for "
            f"{incident.device_id} in time; dispatching the next",
            technician_id=row["technician_id"],
        )
        return dispatch_next(conn, incident_id=incident.id, now=now, estimator=estimator)


def _transition(conn: psycopg.Connection, *, incident_id: int, to: Status) -> Incident:
    incident = service.get_incident(conn, incident_id=incident_id, lock=True)
    problem = check_transition(current=incident.status, to=to)
    if problem:
        raise RescueError(f"incident {incident_id}: {problem}")
    return incident


def on_behalf(*, actor: str | None, technician_id: int) -> str:
    """Rule R6, A1: who took a step: the technician, or the person who recorded it for them."""
    own = f"technician:{technician_id}"
    return own if actor is None or actor == own else f"{actor} on behalf of {own}"


def accept(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    technician_id: int,
    at: datetime,
    actor: str | None = None,
) -> Incident:
    """Rule R4: the dispatched technician accepts, within the time allowed.

    ``actor`` is who recorded it when that is not the technician (a dispatcher on the phone).
    """
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
        who = on_behalf(actor=actor, technician_id=technician_id)
        service.add_step(
            conn,
            incident_id=incident_id,
            step=Step.ACCEPTED,
            at=at,
            actor=who,
            technician_id=technician_id,
        )
        if incident.alarm_id is not None:
            alarm = alerts.get_alarm(conn, alarm_id=incident.alarm_id)
            if alarm.state is not AlarmState.CLEARED:
                alerts.acknowledge_alarm(conn, alarm_id=incident.alarm_id, by=who, at=at)
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
        _breach(conn, incident=incident, detected_at=at)
    incident = service.update_incident(conn, incident_id=incident.id, status=Status.ARRIVED)
    service.announce(conn, incident=incident, change="arrived")
    return incident


def check_in(
    conn: psycopg.Connection,
    *,
    technician_id: int,
    device_id: str,
    at: datetime,
    latitude: float | None,
    longitude: float | None,
    actor: str | None = None,
) -> CheckIn:
    """A technician reports their location; at the site of their incident it proves arrival.

    Rule R6: only the technician's own measured position proves arrival. A check-in without a
    position, or one recorded by somebody else on the technician's behalf, records the arrival
    as unproven (``proven`` false in the step), so that the regulator can tell them apart.
    """
    if (latitude is None) != (longitude is None):
        raise RescueError("a position needs both latitude and longitude")
    with conn.transaction():
        if not service.technician_exists(conn, technician_id=technician_id):
            raise UnknownTechnician(f"no technician {technician_id}")
        who = on_behalf(actor=actor, technician_id=technician_id)
        measured = latitude is not None and who == f"technician:{technician_id}"
        place = (
            Place(latitude, longitude) if latitude is not None and longitude is not None else None
        )
        if place is not None and measured:
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
        evidence: dict[str, Any] = {"proof": "check_in", "proven": measured}
        if place is not None:
            facts = service.site_facts(conn, device_id=device_id)
            metres = distance_m(place, Place(facts["latitude"], facts["longitude"]))
            if metres > ARRIVAL_RADIUS_M:
                return CheckIn(incident, False, f"{metres:.0f} m from the site")
            evidence.update(
                distance_m=round(metres, 1), latitude=place.latitude, longitude=place.longitude
            )
        else:
            evidence["proof"] = "reported_without_position"
        if not measured:
            evidence["unproven_because"] = (
                "no measured position"
                if place is None
                else "position entered on the technician's behalf"
            )
        if incident.status not in NEXT_STATUS[Status.ARRIVED]:
            return CheckIn(incident, False, f"incident is {incident.status.value}")
        incident = _arrive(
            conn,
            incident=incident,
            at=at,
            actor=who,
            technician_id=technician_id,
            evidence=evidence,
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
            evidence={"proof": "inspection_mode", "proven": True},
        )


def _refuse_while_trapped(conn: psycopg.Connection, *, incident: Incident, at: datetime) -> None:
    """Rule R6: nobody releases or closes a rescue while the controller says people are in."""
    [state] = service.lift_states(conn, device_ids=[incident.device_id]) or [None]
    why = still_trapped(state, now=at)
    if why is not None:
        raise StillTrapped(f"incident {incident.id}: {why}")


def release(conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str) -> Incident:
    """Rule R6: the passengers are out (refused while the controller says otherwise)."""
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.RELEASED)
        _refuse_while_trapped(conn, incident=incident, at=at)
        service.add_step(conn, incident_id=incident_id, step=Step.RELEASED, at=at, actor=actor)
        incident = service.update_incident(conn, incident_id=incident_id, status=Status.RELEASED)
        service.announce(conn, incident=incident, change="released")
        return incident


def close(conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str) -> Incident:
    """Rule R6: the incident is over; its alarm clears (refused while people are trapped)."""
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.CLOSED)
        _refuse_while_trapped(conn, incident=incident, at=at)
        service.add_step(conn, incident_id=incident_id, step=Step.CLOSED, at=at, actor=actor)
        return _finish(conn, incident=incident, status=Status.CLOSED, at=at, actor=actor)


def close_false_alarm(
    conn: psycopg.Connection, *, incident_id: int, at: datetime, actor: str, reason: str
) -> Incident:
    """Rule R1: nobody was trapped; the incident closes as a false alarm, logged with why.

    Refused while the controller reports people trapped (rule R6)."""
    if not reason.strip():
        raise RescueError("closing as a false alarm needs a reason")
    with conn.transaction():
        incident = _transition(conn, incident_id=incident_id, to=Status.FALSE_ALARM)
        _refuse_while_trapped(conn, incident=incident, at=at)
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


def _tell_firm(
    conn: psycopg.Connection,
    *,
    incident: Incident,
    audience: Audience,
    reason: str,
    at: datetime,
    kind: str,
    message: str,
    **extra: Any,
) -> None:
    """A message about an incident to one audience of its contracted firm (if it has one)."""
    if incident.firm_id is None:
        return
    alerts.notify_party(
        conn,
        party_type=PartyType.FIRM,
        party_id=incident.firm_id,
        audience=audience,
        subject_type=service.SUBJECT,
        subject_id=incident.id,
        reason=reason,
        payload={
            "kind": kind,
            "incident_id": incident.id,
            "device_id": incident.device_id,
            **extra,
            "message": message,
        },
        at=at,
        alarm_id=incident.alarm_id,
    )


def _breach(conn: psycopg.Connection, *, incident: Incident, detected_at: datetime) -> bool:
    """Rule R6: record a missed deadline once, and tell the firm's manager (rule R5)."""
    assert incident.arrival_deadline is not None
    recorded = service.record_breach(
        conn, incident_id=incident.id, deadline=incident.arrival_deadline, detected_at=detected_at
    )
    if recorded:
        _tell_firm(
            conn,
            incident=incident,
            audience=Audience.FIRM_MANAGER,
            reason="rescue deadline breached",
            at=detected_at,
            kind="rescue_breach",
            message=f"rescue deadline missed for {incident.device_id}: nobody on site by "
            f"{incident.arrival_deadline.isoformat()}",
            arrival_deadline=incident.arrival_deadline.isoformat(),
        )
    return recorded


def deadline_passed(conn: psycopg.Connection, *, incident_id: int, now: datetime) -> bool:
    """Rule R6: nobody arrived by the deadline: record the breach (once)."""
    with conn.transaction():
        incident = service.get_incident(conn, incident_id=incident_id, lock=True)
        deadline = incident.arrival_deadline
        if deadline is None or now < deadline or incident.status is Status.FALSE_ALARM:
            return False
        if service.has_step(conn, incident_id=incident_id, step=Step.ARRIVED):
            return False
        recorded = _breach(conn, incident=incident, detected_at=now)
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
