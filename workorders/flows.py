"""Decisions of the work-order domain: which service level applies (S1), when each deadline
falls, what a step may follow, what an alarm, a rescue or a verdict turns into (S5, S6), and
the working-day count of rule S3.

The functions that take a connection make one decision each in one transaction, reading and
writing through ``workorders.service``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts import service as alerts
from alerts.models import Audience, Severity
from compliance.maintenance import service as maintenance
from compliance.rescue.flows import within_arrival_radius
from compliance.rescue.models import Place
from vigil.catalog import FaultCode
from workorders import service
from workorders.models import (
    ANSWER_WITHIN_H,
    DEFAULT_PROFILE,
    FINAL_STATUSES,
    GENERAL_PROFILE,
    OUTCOME_WITHIN_WORKING_DAYS,
    REPEAT_WINDOW_DAYS,
    TRANSITIONS,
    Channel,
    Complaint,
    ComplaintDeadline,
    ComplaintStatus,
    ComplaintStep,
    Deadline,
    Deadlines,
    Kind,
    Level,
    Opened,
    Origin,
    Party,
    ServiceLevel,
    Source,
    Status,
    Step,
    Targets,
    WorkOrder,
    WorkOrderError,
    Zone,
)

SYSTEM_ACTOR = "workorders"
ESCALATION_POLICY = "work-order"  # rule S2: technician, supervisor, manager, leadership

# -- service levels (rule S1) ---------------------------------------------------------------------


def strictest(targets: Sequence[Targets]) -> Targets:
    """Rule S1: where several profiles apply, the strictest value of each target wins (a
    restore deadline given by any profile counts)."""
    if not targets:
        raise ValueError("no service-level targets to choose from")
    restores = [t.restore_min for t in targets if t.restore_min is not None]
    return Targets(
        respond_min=min(t.respond_min for t in targets),
        escalate_after_min=min(t.escalate_after_min for t in targets),
        restore_min=min(restores) if restores else None,
        on_site_city_min=min(t.on_site_city_min for t in targets),
        on_site_province_min=min(t.on_site_province_min for t in targets),
    )


def zone_of(tier: str) -> Zone:
    """A city site is in a city; every other site counts as the province (rule S1)."""
    return Zone.CITY if tier == "city" else Zone.PROVINCE


def default_profile(device_kind: str) -> str:
    """The built-in profile of a device without contract profiles: S1 for elevators, S6 for
    street lighting and meters."""
    return DEFAULT_PROFILE if device_kind == "elevator" else GENERAL_PROFILE


def deadlines(*, opened_at: datetime, service_level: ServiceLevel) -> Deadlines:
    """When respond, escalate, on-site and restore fall due, counted from opening (rule S1)."""
    t = service_level.targets
    on_site = t.on_site_city_min if service_level.zone is Zone.CITY else t.on_site_province_min
    return Deadlines(
        respond_by=opened_at + timedelta(minutes=t.respond_min),
        escalate_at=opened_at + timedelta(minutes=t.escalate_after_min),
        on_site_by=opened_at + timedelta(minutes=on_site),
        restore_by=(
            opened_at + timedelta(minutes=t.restore_min) if t.restore_min is not None else None
        ),
    )


def service_level_of(
    conn: psycopg.Connection, *, facts: service.DeviceFacts, level: Level, at: datetime
) -> ServiceLevel:
    """The targets in force for a device's work at one level: its contract's profiles (the
    strictest value of each), or the built-in profile of its kind."""
    today = at.astimezone(ZoneInfo(facts.timezone)).date()
    named = service.contract_profiles(conn, device_id=facts.device_id, on=today)
    found = service.profile_targets(conn, codes=named, level=level) if named else {}
    if not found:
        fallback = default_profile(facts.kind)
        found = service.profile_targets(conn, codes=[fallback], level=level)
    return ServiceLevel(
        level=level,
        zone=zone_of(facts.tier),
        targets=strictest(list(found.values())),
        profiles=tuple(sorted(found)),
    )


# -- what needs work ------------------------------------------------------------------------------

# Rule R1 / GB/T 24476: the controller faults that need repair, and how grave each is (S1);
# codes 4 and 11 are entrapments, repaired after the rescue (``source_of_rescue``).
FAULT_LEVELS: dict[int, Level] = {
    FaultCode.SAFETY_CIRCUIT_BROKEN: Level.SEVERE,
    FaultCode.UNINTENDED_CAR_MOVEMENT: Level.SEVERE,
    FaultCode.OVER_TRAVEL_TOP: Level.SEVERE,
    FaultCode.OVER_TRAVEL_BOTTOM: Level.SEVERE,
    FaultCode.DOOR_CLOSE_FAULT: Level.MAJOR,
    FaultCode.DOOR_OPEN_FAULT: Level.MAJOR,
    FaultCode.MOTOR_RUNTIME_LIMITER: Level.MAJOR,
    FaultCode.FLOOR_POSITION_LOST: Level.MAJOR,
    FaultCode.FAULT_PREVENTING_RESTART: Level.MAJOR,
}

# Alarm types that become work (besides the controller's fault alarm): kind and level.
ALARM_WORK: dict[str, tuple[Kind, Level]] = {
    "lamp_failure": (Kind.LAMP_REPLACEMENT, Level.GENERAL),  # rule L1
    "mast_relamping": (Kind.MAST_RELAMPING, Level.GENERAL),  # rule L2
    # rule L5: a lamp or its supply out of band
    "lamp_power_out_of_band": (Kind.LAMP_REPLACEMENT, Level.NON_FAULT),
    "supply_voltage_out_of_band": (Kind.LAMP_REPLACEMENT, Level.GENERAL),
    # rules E1-E4: a meter that stopped reporting, reads out of band, runs backwards
    "voltage_out_of_band": (Kind.METER_FAULT, Level.GENERAL),
    "reverse_energy": (Kind.METER_FAULT, Level.MAJOR),  # possible tampering
    "reverse_flow": (Kind.METER_FAULT, Level.MAJOR),  # possible tampering
    "communication_loss": (Kind.METER_FAULT, Level.GENERAL),
    "consumption_anomaly": (Kind.METER_FAULT, Level.NON_FAULT),
    "counter_integrity": (Kind.METER_FAULT, Level.NON_FAULT),
}
# Rule L4: a pole's or mast's round overdue is an inspection task; a round failed (grounding
# over 4 ohm, insulation under 0.5 Mohm, a damaged box, a calibration off) is corrective work.
# Each is of one kind of round: ``inspection_missed.grounding``.
ALARM_FAMILY_WORK: dict[str, tuple[Kind, Level]] = {
    "inspection_missed": (Kind.INSPECTION_TASK, Level.NON_FAULT),
    "inspection_failed": (Kind.CORRECTIVE_WORK, Level.GENERAL),
}
FAULT_ALARM = "controller_fault"


def alarm_work(alarm_type: str | None) -> tuple[Kind, Level] | None:
    """The kind and level of work an alarm type calls for (besides controller faults)."""
    if alarm_type is None:
        return None
    family = alarm_type.split(".", 1)[0] if "." in alarm_type else None
    return ALARM_WORK.get(alarm_type) or ALARM_FAMILY_WORK.get(family or "")


def watches(alarm_type: str | None) -> bool:
    """Whether an alarm of this type becomes work."""
    return alarm_type == FAULT_ALARM or alarm_work(alarm_type) is not None


def source_of_alarm(alarm: Any) -> Source | None:
    """The work an alarm on a device calls for, or None (``alarm``: an ``alerts`` Alarm)."""
    if alarm.source_type != "device":
        return None
    if alarm.type == FAULT_ALARM:
        code = alarm.details.get("fault_code")
        if code not in FAULT_LEVELS:
            return None
        name = alarm.details.get("fault") or FaultCode(code).name.lower().replace("_", " ")
        return Source(
            device_id=alarm.source_id,
            kind=Kind.FAULT_REPAIR,
            cause=f"fault_code:{code}",
            level=FAULT_LEVELS[code],
            origin=Origin.ALARM,
            source_ref=f"{alarm.id}:{alarm.trigger_count}",
            title=f"controller fault {code} ({name})",
            details={"alarm_id": alarm.id, "fault_code": code},
        )
    if work := alarm_work(alarm.type):
        kind, level = work
        return Source(
            device_id=alarm.source_id,
            kind=kind,
            cause=alarm.type,
            level=level,
            origin=Origin.ALARM,
            source_ref=f"{alarm.id}:{alarm.trigger_count}",
            title=alarm.message,
            details={"alarm_id": alarm.id, "alarm_type": alarm.type},
        )
    return None


# Rule R1: an entrapment the lift's own malfunction caused needs repair before it runs again;
# a press of the alarm button or a report by phone says nothing about the machine.
REPAIR_TRIGGERS = frozenset({"stopped_outside_door_zone", "trapped_at_floor", "fault_code"})


def source_of_rescue(incident: Any) -> Source | None:
    """The emergency repair a closed rescue calls for (``incident``: a rescue Incident)."""
    if str(incident.trigger) not in REPAIR_TRIGGERS or str(incident.status) == "false_alarm":
        return None
    return Source(
        device_id=incident.device_id,
        kind=Kind.EMERGENCY_REPAIR,
        cause="entrapment",
        level=Level.SEVERE,
        origin=Origin.RESCUE,
        source_ref=str(incident.id),
        title=f"repair after entrapment ({incident.trigger})",
        details={"incident_id": incident.id, "trigger": str(incident.trigger)},
    )


def verdict_cause(record_id: int) -> str:
    """The cause of the corrective work of one maintenance record."""
    return f"maintenance_record:{record_id}"


def source_of_verdict(
    *, verdict_id: int, record_id: int, device_id: str, verdict: str
) -> Source | None:
    """Rule M3: a maintenance visit the telemetry does not prove is done again."""
    if verdict == "verified":
        return None
    return Source(
        device_id=device_id,
        kind=Kind.CORRECTIVE_WORK,
        cause=verdict_cause(record_id),
        level=Level.GENERAL,
        origin=Origin.MAINTENANCE_VERDICT,
        source_ref=str(verdict_id),
        title=f"maintenance record {record_id} not proven ({verdict}): visit again",
        details={"record_id": record_id, "verdict": verdict},
    )


def proven_after_all(
    conn: psycopg.Connection, *, device_id: str, record_id: int, at: datetime
) -> WorkOrder | None:
    """Late evidence verified a visit (rule M3): its corrective work is no longer needed."""
    with conn.transaction():
        order = service.open_order_of(
            conn, device_id=device_id, cause=verdict_cause(record_id), lock=True
        )
        if order is None:
            return None
        return cancel(
            conn,
            work_order_id=order.id,
            at=at,
            actor=SYSTEM_ACTOR,
            reason="late evidence verified the visit",
        )


def open_or_repeat(
    conn: psycopg.Connection,
    *,
    source: Source,
    at: datetime,
    actor: str = SYSTEM_ACTOR,
    note: str = "",
) -> Opened:
    """Open the work a source calls for, or count it on the open order of the same device and
    cause (one open order per device and cause). Rule S5: an order for the same fault on the
    same device within 30 days of an earlier one is a repeat fault and names it."""
    with conn.transaction():
        if source.source_ref is not None:
            done = service.order_of_source(conn, origin=source.origin, source_ref=source.source_ref)
            if done is not None:
                return Opened(done, created=False)  # this source was turned into work already
        existing = service.open_order_of(
            conn, device_id=source.device_id, cause=source.cause, lock=True
        )
        if existing is None:
            facts = service.device_facts(conn, device_id=source.device_id)
            level = service_level_of(conn, facts=facts, level=source.level, at=at)
            earlier = service.earlier_order(
                conn,
                device_id=source.device_id,
                cause=source.cause,
                since=at - timedelta(days=REPEAT_WINDOW_DAYS),
            )
            order = service.insert_work_order(
                conn,
                facts=facts,
                kind=source.kind,
                cause=source.cause,
                origin=source.origin,
                source_ref=source.source_ref,
                title=source.title,
                service_level=level,
                deadlines=deadlines(opened_at=at, service_level=level),
                opened_at=at,
                repeat_of=earlier,
            )
            if order is not None:
                _take(conn, order=order, source=source, at=at)
                service.add_step(
                    conn,
                    work_order_id=order.id,
                    step=Step.OPENED,
                    at=at,
                    actor=actor,
                    note=note,
                    details={
                        "kind": str(order.kind),
                        "cause": order.cause,
                        "origin": str(order.origin),
                        "service_level": order.service_level,
                        "repeat_of": order.repeat_of,
                        **source.details,
                    },
                )
                service.announce(conn, order=order, change="opened")
                return Opened(order, created=True)
            # another engine opened it a moment ago
            existing = service.open_order_of(
                conn, device_id=source.device_id, cause=source.cause, lock=True
            )
            if existing is None:
                raise WorkOrderError(f"could not open work on {source.device_id}")
        _take(conn, order=existing, source=source, at=at)
        return Opened(
            _repeat(conn, order=existing, source=source, at=at, actor=actor, note=note),
            created=False,
        )


def _take(conn: psycopg.Connection, *, order: WorkOrder, source: Source, at: datetime) -> None:
    if source.source_ref is not None:
        service.take_source(
            conn,
            origin=source.origin,
            source_ref=source.source_ref,
            work_order_id=order.id,
            at=at,
        )


def _repeat(
    conn: psycopg.Connection,
    *,
    order: WorkOrder,
    source: Source,
    at: datetime,
    actor: str,
    note: str,
) -> WorkOrder:
    order = service.count_repeat(conn, work_order_id=order.id, at=at)
    service.add_step(
        conn,
        work_order_id=order.id,
        step=Step.REPEATED,
        at=at,
        actor=actor,
        note=note,
        details={"origin": str(source.origin), "source_ref": source.source_ref, **source.details},
    )
    service.announce(conn, order=order, change="repeated")
    return order


# -- the lifecycle --------------------------------------------------------------------------------


def check_transition(*, current: Status, to: Status) -> str | None:
    """Why a work order in ``current`` cannot go to ``to``; None when it may."""
    if to in TRANSITIONS[current]:
        return None
    if current in FINAL_STATUSES:
        return f"the work order is {current}"
    return f"a work order that is {current} cannot become {to}"


def _move(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    to: Status,
    at: datetime,
    actor: str,
    note: str,
    details: dict[str, Any] | None = None,
    **fields: Any,
) -> WorkOrder:
    order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
    refused = check_transition(current=order.status, to=to)
    if refused is not None:
        raise WorkOrderError(refused)
    order = service.update_work_order(conn, work_order_id=order.id, status=to, **fields)
    step = Step(str(to))  # every status is also the step that reaches it
    service.add_step(
        conn, work_order_id=order.id, step=step, at=at, actor=actor, note=note, details=details
    )
    _record_missed(conn, order=order, now=at)
    service.announce(conn, order=order, change=str(step))
    return order


def respond(
    conn: psycopg.Connection, *, work_order_id: int, at: datetime, actor: str, note: str = ""
) -> WorkOrder:
    """The duty line answers: the respond deadline of rule S1 is met (status unchanged)."""
    with conn.transaction():
        order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
        if order.status in FINAL_STATUSES:
            raise WorkOrderError(f"the work order is {order.status}")
        if order.responded_at is None:
            order = service.update_work_order(conn, work_order_id=order.id, responded_at=at)
            service.add_step(
                conn, work_order_id=order.id, step=Step.RESPONDED, at=at, actor=actor, note=note
            )
            service.announce(conn, order=order, change="responded")
        _record_missed(conn, order=order, now=at)
        return order


def assign(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    technician_id: int,
    at: datetime,
    actor: str,
    note: str = "",
) -> WorkOrder:
    """Give the work to a qualified technician of the firm in force (rule M10); assigning is a
    response too."""
    with conn.transaction():
        order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
        facts = service.device_facts(conn, device_id=order.device_id)
        firm = service.technician_firm(conn, technician_id=technician_id)
        if firm is None:
            raise WorkOrderError(f"no technician {technician_id}")
        if facts.firm_id is None or firm != facts.firm_id:
            raise WorkOrderError(
                f"technician {technician_id} is not of the firm holding {order.device_id}"
            )
        today = at.astimezone(ZoneInfo(facts.timezone)).date()
        if not maintenance.is_qualified(conn, technician_id=technician_id, on=today):
            # rule M10: an expired certificate (or a firm's licence) bars the work
            raise WorkOrderError(f"technician {technician_id} is not qualified on {today}")
        return _move(
            conn,
            work_order_id=order.id,
            to=Status.ASSIGNED,
            at=at,
            actor=actor,
            note=note,
            details={"technician_id": technician_id},
            technician_id=technician_id,
            responded_at=at,
        )


def accept(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    technician_id: int,
    at: datetime,
    note: str = "",
) -> WorkOrder:
    """The assigned technician takes the work."""
    with conn.transaction():
        order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
        if order.technician_id != technician_id:
            raise WorkOrderError(f"the work order is not assigned to technician {technician_id}")
        return _move(
            conn,
            work_order_id=order.id,
            to=Status.ACCEPTED,
            at=at,
            actor=f"technician:{technician_id}",
            note=note,
        )


def check_in(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    technician_id: int,
    at: datetime,
    latitude: float | None,
    longitude: float | None,
    note: str = "",
) -> WorkOrder:
    """The technician is on site. Proof is the technician's own measured position at the site,
    or, for an elevator, inspection mode switched on after the work was accepted; a position
    is never filled in for them, and without proof the check-in is refused."""
    if (latitude is None) != (longitude is None):
        raise WorkOrderError("a position needs both latitude and longitude")
    with conn.transaction():
        order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
        if order.technician_id != technician_id:
            raise WorkOrderError(f"the work order is not assigned to technician {technician_id}")
        facts = service.device_facts(conn, device_id=order.device_id)
        proof: dict[str, Any]
        if latitude is not None and longitude is not None:
            if facts.latitude is None or facts.longitude is None:
                raise WorkOrderError(f"the site of {order.device_id} has no position to check")
            if not within_arrival_radius(
                at=Place(latitude, longitude), site=Place(facts.latitude, facts.longitude)
            ):
                raise WorkOrderError("the position given is not at the site")
            proof = {"proof": "position", "latitude": latitude, "longitude": longitude}
        else:
            accepted_at = service.step_time(conn, work_order_id=order.id, step=Step.ACCEPTED)
            since = service.inspection_since(conn, device_id=order.device_id)
            if since is None or accepted_at is None or since < accepted_at:
                raise WorkOrderError(
                    "no proof of presence: send the measured position, or switch the lift "
                    "to inspection mode"
                )
            proof = {"proof": "inspection_mode", "since": since.isoformat()}
        return _move(
            conn,
            work_order_id=order.id,
            to=Status.ON_SITE,
            at=at,
            actor=f"technician:{technician_id}",
            note=note,
            details=proof,
            on_site_at=at,
        )


def resolve(
    conn: psycopg.Connection, *, work_order_id: int, at: datetime, actor: str, note: str = ""
) -> WorkOrder:
    """The work is done: service is restored (rule S1); the escalation stops (S2)."""
    with conn.transaction():
        order = _move(
            conn,
            work_order_id=work_order_id,
            to=Status.RESOLVED,
            at=at,
            actor=actor,
            note=note,
            resolved_at=at,
        )
        _stop_escalation(conn, order=order, at=at, reason="resolved")
        return order


def callback(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    at: datetime,
    actor: str,
    reached: bool,
    satisfaction: int | None,
    note: str = "",
) -> WorkOrder:
    """Rule S4: the customer is called back after the work is resolved; a call that reaches
    them with a satisfaction score closes the work order, one that does not is retried."""
    if reached and satisfaction is None:
        raise WorkOrderError("a callback that reached the customer records their satisfaction")
    if not reached and satisfaction is not None:
        raise WorkOrderError("nobody was reached to give a satisfaction score")
    with conn.transaction():
        order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
        if order.status is not Status.RESOLVED:
            raise WorkOrderError(
                f"a callback follows the resolution; the work order is {order.status}"
            )
        made = service.add_callback(
            conn,
            work_order_id=order.id,
            at=at,
            actor=actor,
            reached=reached,
            satisfaction=satisfaction,
            note=note,
        )
        service.add_step(
            conn,
            work_order_id=order.id,
            step=Step.CALLBACK,
            at=at,
            actor=actor,
            note=note,
            details={"reached": reached, "satisfaction": satisfaction, "callback_id": made.id},
        )
        if not reached:
            return order
        return _move(
            conn,
            work_order_id=order.id,
            to=Status.CLOSED,
            at=at,
            actor=actor,
            note="",
            details={"satisfaction": satisfaction},
            closed_at=at,
        )


def cancel(
    conn: psycopg.Connection, *, work_order_id: int, at: datetime, actor: str, reason: str
) -> WorkOrder:
    """The work is not needed (a false report, a duplicate); the reason is kept."""
    with conn.transaction():
        order = _move(
            conn,
            work_order_id=work_order_id,
            to=Status.CANCELLED,
            at=at,
            actor=actor,
            note=reason,
            closed_at=at,
        )
        _stop_escalation(conn, order=order, at=at, reason="cancelled")
        return order


# -- deadlines and escalation (rules S1, S2) ------------------------------------------------------


def _record_missed(conn: psycopg.Connection, *, order: WorkOrder, now: datetime) -> list[Deadline]:
    """Record each deadline of this order that passed unmet (once: it stays a breach); an
    unresolved order that misses one escalates up its chain now (rule S2), if it has not yet."""
    missed: list[Deadline] = []
    for deadline, due, met in (
        (Deadline.RESPOND, order.respond_by, order.responded_at),
        (Deadline.ON_SITE, order.on_site_by, order.on_site_at),
        (Deadline.RESTORE, order.restore_by, order.resolved_at),
    ):
        if due is None:
            continue
        late = met > due if met is not None else now > due and order.status not in FINAL_STATUSES
        if late and service.record_breach(
            conn, work_order_id=order.id, deadline=deadline, due_at=due, detected_at=now
        ):
            service.add_step(
                conn,
                work_order_id=order.id,
                step=Step.BREACH,
                at=now,
                actor=SYSTEM_ACTOR,
                details={"deadline": str(deadline), "due_at": due.isoformat()},
            )
            missed.append(deadline)
    if missed:
        service.announce(conn, order=order, change="breach")
        if order.open and not service.has_step(conn, work_order_id=order.id, step=Step.ESCALATED):
            _escalate(conn, order=order, now=now)
    return missed


def check_deadlines(conn: psycopg.Connection, *, now: datetime) -> int:
    """Record every deadline of a work order (S1) or a complaint (S3) that passed unmet, and
    escalate the unresolved orders whose time has come (rule S2). How many things changed."""
    changed = 0
    with conn.transaction():
        for work_order_id, _deadline, _due in service.missed_deadlines(conn, now=now):
            order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
            changed += len(_record_missed(conn, order=order, now=now))
        for work_order_id in service.due_escalations(conn, now=now):
            order = service.get_work_order(conn, work_order_id=work_order_id, lock=True)
            if order.open:
                _escalate(conn, order=order, now=now)
                changed += 1
        for complaint_id in service.missed_complaint_deadlines(conn, now=now):
            complaint = service.get_complaint(conn, complaint_id=complaint_id, lock=True)
            changed += len(_record_complaint_missed(conn, complaint=complaint, now=now))
    return changed


def escalation_alarm_type(order: WorkOrder) -> str:
    """The alarm that carries one work order up its chain."""
    return f"work_order.{order.id}"


def _escalate(conn: psycopg.Connection, *, order: WorkOrder, now: datetime) -> None:
    """Rule S2: raise the order's alarm on the work-order policy; its levels fire on the alerts
    timer, level by level, until the order is resolved."""
    alarm = alerts.raise_alarm(
        conn,
        source_type="device",
        source_id=order.device_id,
        type=escalation_alarm_type(order),
        severity=Severity.CRITICAL if order.level is Level.SEVERE else Severity.MAJOR,
        message=f"work order {order.id} unresolved: {order.title}",
        audience=[Audience.FIRM, Audience.TECHNICIAN],
        at=now,
        details={"work_order_id": order.id, "level": int(order.level), "rule": "S2"},
        actor=SYSTEM_ACTOR,
        policy=ESCALATION_POLICY,
    )
    service.add_step(
        conn,
        work_order_id=order.id,
        step=Step.ESCALATED,
        at=now,
        actor=SYSTEM_ACTOR,
        details={"alarm_id": alarm.id, "escalate_at": order.escalate_at.isoformat()},
    )
    service.announce(conn, order=order, change="escalated")


def _stop_escalation(
    conn: psycopg.Connection, *, order: WorkOrder, at: datetime, reason: str
) -> None:
    alerts.clear_alarms_of(
        conn,
        source_type="device",
        source_id=order.device_id,
        type=escalation_alarm_type(order),
        by=SYSTEM_ACTOR,
        at=at,
        reason=f"work order {reason}",
    )


# -- working days (rule S3) -----------------------------------------------------------------------


def is_working_day(day: date, *, overrides: Mapping[date, bool]) -> bool:
    """Monday to Friday, unless a holiday; a weekend day declared a make-up working day works."""
    return overrides.get(day, day.weekday() < 5)


def add_working_days(start: date, days: int, *, overrides: Mapping[date, bool]) -> date:
    """The ``days``-th working day after ``start`` (the day something arrived does not count)."""
    if days < 1:
        raise ValueError("count at least one working day")
    day, counted = start, 0
    while counted < days:
        day += timedelta(days=1)
        if is_working_day(day, overrides=overrides):
            counted += 1
    return day


def working_deadline(
    conn: psycopg.Connection,
    *,
    jurisdiction_id: int,
    timezone: str,
    received_at: datetime,
    days: int,
) -> datetime:
    """The end (local midnight) of the ``days``-th working day after ``received_at``."""
    zone = ZoneInfo(timezone)
    start = received_at.astimezone(zone).date()
    overrides = service.calendar_overrides(
        conn,
        jurisdiction_id=jurisdiction_id,
        start=start,
        end=start + timedelta(days=days * 3 + 30),
    )
    last = add_working_days(start, days, overrides=overrides)
    return datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone)


# -- complaints (rules S3, S5) --------------------------------------------------------------------


def register_complaint(
    conn: psycopg.Connection,
    *,
    device_id: str,
    channel: Channel,
    complainant: str,
    contact: str,
    subject: str,
    at: datetime,
    actor: str,
) -> Complaint:
    """Rule S5: register a complaint; rule S3 sets its deadlines: an answer within 24 h, the
    outcome by the end of the 2nd working day after it came in (the jurisdiction's calendar)."""
    with conn.transaction():
        facts = service.device_facts(conn, device_id=device_id)
        outcome_by = working_deadline(
            conn,
            jurisdiction_id=facts.jurisdiction_id,
            timezone=facts.timezone,
            received_at=at,
            days=OUTCOME_WITHIN_WORKING_DAYS,
        )
        made = service.insert_complaint(
            conn,
            facts=facts,
            received_at=at,
            channel=channel,
            complainant=complainant,
            contact=contact,
            subject=subject,
            answer_by=at + timedelta(hours=ANSWER_WITHIN_H),
            outcome_by=outcome_by,
        )
        service.add_complaint_step(
            conn,
            complaint_id=made.id,
            step=ComplaintStep.REGISTERED,
            at=at,
            actor=actor,
            note=subject,
            details={
                "channel": str(channel),
                "answer_by": made.answer_by.isoformat(),
                "outcome_by": made.outcome_by.isoformat(),
                "rule": "S3",
            },
        )
        return made


def _complaint_step(
    conn: psycopg.Connection,
    *,
    complaint_id: int,
    step: ComplaintStep,
    at: datetime,
    actor: str,
    note: str = "",
    details: dict[str, Any] | None = None,
    allowed: frozenset[ComplaintStatus],
    **fields: Any,
) -> Complaint:
    complaint = service.get_complaint(conn, complaint_id=complaint_id, lock=True)
    if complaint.status not in allowed:
        raise WorkOrderError(f"a complaint that is {complaint.status} cannot be {step}")
    if fields:
        complaint = service.update_complaint(conn, complaint_id=complaint.id, **fields)
    service.add_complaint_step(
        conn,
        complaint_id=complaint.id,
        step=step,
        at=at,
        actor=actor,
        note=note,
        details=details,
    )
    _record_complaint_missed(conn, complaint=complaint, now=at)
    return complaint


OPEN_COMPLAINT = frozenset(
    {ComplaintStatus.REGISTERED, ComplaintStatus.ANALYSED, ComplaintStatus.SOLUTION_AGREED}
)


def answer_complaint(
    conn: psycopg.Connection, *, complaint_id: int, at: datetime, actor: str, note: str
) -> Complaint:
    """Rule S3: the customer hears back (the first answer meets the 24-hour deadline)."""
    with conn.transaction():
        return _complaint_step(
            conn,
            complaint_id=complaint_id,
            step=ComplaintStep.ANSWERED,
            at=at,
            actor=actor,
            note=note,
            allowed=OPEN_COMPLAINT,
            answered_at=at,
        )


def analyse_complaint(
    conn: psycopg.Connection,
    *,
    complaint_id: int,
    cause: str,
    responsible_party: Party,
    at: datetime,
    actor: str,
    note: str = "",
) -> Complaint:
    """Rule S5: the cause and who is responsible."""
    with conn.transaction():
        return _complaint_step(
            conn,
            complaint_id=complaint_id,
            step=ComplaintStep.ANALYSED,
            at=at,
            actor=actor,
            note=note,
            details={"cause": cause, "responsible_party": str(responsible_party)},
            allowed=frozenset({ComplaintStatus.REGISTERED, ComplaintStatus.ANALYSED}),
            status=ComplaintStatus.ANALYSED,
            cause=cause,
            responsible_party=responsible_party,
        )


def agree_solution(
    conn: psycopg.Connection,
    *,
    complaint_id: int,
    solution: str,
    follow_up_level: Level | None,
    at: datetime,
    actor: str,
) -> Complaint:
    """Rule S5: the solution agreed with the customer; work on the asset, when it needs any,
    becomes a complaint follow-up work order tracked to closure."""
    with conn.transaction():
        complaint = service.get_complaint(conn, complaint_id=complaint_id, lock=True)
        work_order_id = None
        if follow_up_level is not None:
            opened = open_or_repeat(
                conn,
                source=Source(
                    device_id=complaint.device_id,
                    kind=Kind.COMPLAINT_FOLLOW_UP,
                    cause=f"complaint:{complaint.id}",
                    level=follow_up_level,
                    origin=Origin.COMPLAINT,
                    source_ref=f"complaint:{complaint.id}",
                    title=f"complaint {complaint.id}: {solution}"[:500],
                    details={"complaint_id": complaint.id},
                ),
                at=at,
                actor=actor,
            )
            work_order_id = opened.work_order.id
        return _complaint_step(
            conn,
            complaint_id=complaint.id,
            step=ComplaintStep.SOLUTION_AGREED,
            at=at,
            actor=actor,
            note=solution,
            details={"work_order_id": work_order_id},
            allowed=frozenset({ComplaintStatus.ANALYSED}),
            status=ComplaintStatus.SOLUTION_AGREED,
            solution=solution,
            work_order_id=work_order_id,
        )


def send_outcome(
    conn: psycopg.Connection, *, complaint_id: int, at: datetime, actor: str, note: str
) -> Complaint:
    """Rule S3: the outcome goes back to the customer (within 2 working days)."""
    with conn.transaction():
        return _complaint_step(
            conn,
            complaint_id=complaint_id,
            step=ComplaintStep.OUTCOME_SENT,
            at=at,
            actor=actor,
            note=note,
            allowed=frozenset({ComplaintStatus.SOLUTION_AGREED}),
            outcome_sent_at=at,
        )


def close_complaint(
    conn: psycopg.Connection, *, complaint_id: int, at: datetime, actor: str, note: str = ""
) -> Complaint:
    """Rule S5: tracked to closure: the outcome was sent and the follow-up work is done."""
    with conn.transaction():
        complaint = service.get_complaint(conn, complaint_id=complaint_id, lock=True)
        if complaint.outcome_sent_at is None:
            raise WorkOrderError("the outcome has not gone back to the customer yet (rule S3)")
        if complaint.work_order_id is not None:
            work = service.get_work_order(conn, work_order_id=complaint.work_order_id)
            if work.status not in (Status.RESOLVED, Status.CLOSED):
                raise WorkOrderError(
                    f"the follow-up work order {work.id} is {work.status}, not done yet"
                )
        return _complaint_step(
            conn,
            complaint_id=complaint.id,
            step=ComplaintStep.CLOSED,
            at=at,
            actor=actor,
            note=note,
            allowed=frozenset({ComplaintStatus.SOLUTION_AGREED}),
            status=ComplaintStatus.CLOSED,
            closed_at=at,
        )


def _record_complaint_missed(
    conn: psycopg.Connection, *, complaint: Complaint, now: datetime
) -> list[ComplaintDeadline]:
    missed: list[ComplaintDeadline] = []
    for deadline, due, met in (
        (ComplaintDeadline.ANSWER, complaint.answer_by, complaint.answered_at),
        (ComplaintDeadline.OUTCOME, complaint.outcome_by, complaint.outcome_sent_at),
    ):
        late = met > due if met is not None else now > due and complaint.closed_at is None
        if late and service.record_complaint_breach(
            conn, complaint_id=complaint.id, deadline=deadline, due_at=due, detected_at=now
        ):
            service.add_complaint_step(
                conn,
                complaint_id=complaint.id,
                step=ComplaintStep.BREACH,
                at=now,
                actor=SYSTEM_ACTOR,
                details={"deadline": str(deadline), "due_at": due.isoformat(), "rule": "S3"},
            )
            missed.append(deadline)
    return missed
