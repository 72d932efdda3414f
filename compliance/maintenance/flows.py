"""Decisions of maintenance compliance: records, evidence verdicts, sweeps, escalation, lockout.

Rules M1-M11 of RULES.md. Every decision is appended to the compliance log (rule A1) with the
rule values in force, in the same transaction as the state it changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import psycopg

from alerts import service as alerts
from compliance.log import service as log
from compliance.log.models import canonical_json
from compliance.maintenance import service
from compliance.maintenance.models import (
    ALL_ITEMS,
    TIERS,
    EscalationState,
    Interval,
    Judgement,
    Part,
    PartChange,
    Policy,
    Record,
    RecordError,
    SweepResult,
    Tier,
    Transition,
    Verdict,
    checklist,
)

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: one sweep at a time across all engines ("MSWP").

# A claim may end a little after "now" (clock skew between a phone and the platform).
FUTURE_CLAIM_TOLERANCE = timedelta(minutes=5)

LOCKED_STATES = (EscalationState.LOCKOUT_PENDING, EscalationState.LOCKED_OUT)


def credited_tier(*, tier: Tier, done: set[str]) -> Tier | None:
    """Highest tier up to ``tier`` whose cumulative checklist is complete (rule M2)."""
    best: Tier | None = None
    for candidate in TIERS[: tier.rank]:
        if set(checklist(candidate)) <= done:
            best = candidate
    return best


def raise_alarm(
    conn: psycopg.Connection,
    *,
    type: str,
    source_type: str,
    source_id: str,
    severity: str,
    message: str,
    audience: Sequence[str],
    body: dict[str, Any],
    at: datetime,
    log_items: list[dict[str, Any]] | None = None,
    pending: list[PendingAlarm] | None = None,
) -> None:
    """Raise an alarm through the alerts package and log it (rules M5, M7, A1).

    With ``log_items``, the log entry is added to that list for the caller to append in bulk;
    with ``pending`` too, the alarm is raised later with the others (``raise_pending``), and its
    entry gets the alarm's id then.
    """
    details = json.loads(canonical_json(body))
    request = {
        "source_type": source_type,
        "source_id": source_id,
        "type": type,
        "severity": severity,
        "message": message,
        "audience": list(audience),
        "at": at,
        "details": details,
        "actor": service.ENGINE_ACTOR,
    }
    item = {
        "kind": "alarm.raised",
        "subject_type": source_type,
        "subject_id": source_id,
        "body": {
            "alarm_id": None,
            "type": type,
            "severity": severity,
            "audience": list(audience),
            "message": message,
            **details,
        },
        "actor": service.ENGINE_ACTOR,
        "at": at,
    }
    if pending is not None and log_items is not None:
        pending.append(PendingAlarm(request, item))
        log_items.append(item)
        return
    item["body"]["alarm_id"] = alerts.raise_alarm(conn, **request).id
    if log_items is not None:
        log_items.append(item)
    else:
        log.append(conn, **item)


class PendingAlarm(NamedTuple):
    """An alarm to raise, and the log entry that waits for its id."""

    request: dict[str, Any]
    item: dict[str, Any]


def raise_pending(conn: psycopg.Connection, *, pending: list[PendingAlarm]) -> None:
    """Raise the pending alarms in one round trip and give their log entries the alarm ids."""
    raised = alerts.raise_alarms(conn, alarms=[p.request for p in pending])
    for waiting, alarm in zip(pending, raised, strict=True):
        waiting.item["body"]["alarm_id"] = alarm.id
    pending.clear()


def clear_alarm(
    conn: psycopg.Connection,
    *,
    type: str,
    source_type: str,
    source_id: str,
    reason: str,
    at: datetime,
    log_items: list[dict[str, Any]] | None = None,
) -> None:
    """Clear the open alarm of a source and type, if any, and log it (or add to ``log_items``)."""
    cleared = alerts.clear_alarms_of(
        conn,
        source_type=source_type,
        source_id=source_id,
        type=type,
        by=service.ENGINE_ACTOR,
        at=at,
        reason=reason,
    )
    if cleared is None:
        return
    item = {
        "kind": "alarm.cleared",
        "subject_type": source_type,
        "subject_id": source_id,
        "body": {"alarm_id": cleared.id, "type": type, "reason": reason},
        "actor": service.ENGINE_ACTOR,
        "at": at,
    }
    if log_items is not None:
        log_items.append(item)
    else:
        log.append(conn, **item)


# Who hears about a lapse in self-monitoring: firm, user unit and manufacturer (M5, M7).
SELF_MONITORING_AUDIENCE = ("firm", "user_unit", "manufacturer")
MAINTENANCE_ALARMS = (
    "maintenance.overdue",
    # rule M5: a further tier falling overdue while the lift is already overdue has its own
    *(f"maintenance.overdue.{tier}" for tier in TIERS),
    "maintenance.lockout",
    "maintenance.lockout_recommended",
)
# States in which a lift is already overdue (a further tier then raises its own alarm).
_LAPSED = frozenset(
    {
        EscalationState.OVERDUE,
        EscalationState.LOCKOUT_PENDING,
        EscalationState.LOCKOUT_RECOMMENDED,
        EscalationState.LOCKED_OUT,
        EscalationState.OVERRIDDEN,
    }
)


# ---------------------------------------------------------------- records (rules M2, M4, M9, M10)


def submit_record(
    conn: psycopg.Connection,
    *,
    device_id: str,
    technician_id: int,
    tier: Tier | str,
    claimed_start: datetime,
    claimed_end: datetime,
    checklist_done: Sequence[str],
    parts: Sequence[Part] = (),
    notes: str = "",
    recorded_by: str,
    at: datetime,
    corrects_id: int | None = None,
    correction_reason: str | None = None,
) -> tuple[Record, Judgement | None]:
    """Save an immutable maintenance record, flag M9/M10 issues, and judge it if it is over."""
    try:
        tier = Tier(tier)
    except ValueError:
        raise RecordError(f"unknown tier {tier!r}; one of {', '.join(TIERS)}") from None
    done = set(checklist_done)
    unknown = sorted(done - ALL_ITEMS)
    if unknown:
        raise RecordError(f"unknown checklist items: {', '.join(unknown[:5])}")
    if claimed_start.tzinfo is None or claimed_end.tzinfo is None:
        raise RecordError("claimed times must be timezone-aware")
    if claimed_end <= claimed_start:
        raise RecordError("claimed_end must be after claimed_start")
    if claimed_end > at + FUTURE_CLAIM_TOLERANCE:
        raise RecordError("a visit cannot be recorded before it ends")
    for part in parts:
        if not part.component or not part.model:
            raise RecordError("every part needs a component and a model number")
    if (corrects_id is None) != (correction_reason is None or not correction_reason.strip()):
        raise RecordError("a correction needs both the record it corrects and a reason")
    with conn.transaction():
        service.lock_device(conn, device_id=device_id)
        if service.device_kind(conn, device_id=device_id) != "elevator":
            raise RecordError(f"no elevator {device_id!r}")
        try:
            firm_id = service.technician_firm(conn, technician_id=technician_id)
        except LookupError as exc:
            raise RecordError(str(exc)) from None
        if corrects_id is not None:
            old = service.record(conn, record_id=corrects_id)
            if old is None or old.device_id != device_id:
                raise RecordError(f"record {corrects_id} is not a record of {device_id}")
            if service.is_superseded(conn, record_id=corrects_id):
                raise RecordError(f"record {corrects_id} was already corrected; correct the latest")
        saved = service.insert_record(
            conn,
            device_id=device_id,
            technician_id=technician_id,
            firm_id=firm_id,
            tier=tier,
            claimed_start=claimed_start,
            claimed_end=claimed_end,
            checklist_done=sorted(done),
            checklist_total=len(checklist(tier)),
            credited_tier=credited_tier(tier=tier, done=done),
            parts=parts,
            notes=notes,
            corrects_id=corrects_id,
            correction_reason=correction_reason,
            recorded_by=recorded_by,
            at=at,
        )
        _check_parts(conn, record=saved, parts=parts, at=at)
        _check_technician(conn, record=saved, at=at)
        judgement = None
        if claimed_end <= at:
            judgement = judge_and_store(conn, record=saved, now=at)
        elif corrects_id is not None:
            service.refresh_clocks(conn, device_id=device_id, at=at)
        service.announce_record(conn, device_id=device_id)
    return saved, judgement


def _check_parts(
    conn: psycopg.Connection, *, record: Record, parts: Sequence[Part], at: datetime
) -> None:
    """Rule M9: a replaced safety component must match the certified model."""
    certified = service.certified_models(conn, device_id=record.device_id)
    for part in parts:
        if not part.safety and part.component not in certified:
            continue
        expected = certified.get(part.component)
        if part.change is PartChange.MODIFICATION:
            kind = "modification"
        elif expected is None:
            kind = "uncertified_component"
        elif part.model == expected:
            continue
        elif part.change is PartChange.REPAIR:
            kind = "modification_booked_as_repair"
        else:
            kind = "component_mismatch"
        _flag(
            conn,
            device_id=record.device_id,
            audience=("firm", "user_unit", "manufacturer"),
            rule="M9",
            kind=kind,
            subject_type="maintenance_record",
            subject_id=str(record.id),
            detail={
                "device_id": record.device_id,
                "component": part.component,
                "model": part.model,
                "certified_model": expected,
                "change": str(part.change),
            },
            at=at,
        )


def _flag(
    conn: psycopg.Connection,
    *,
    device_id: str,
    audience: Sequence[str],
    rule: str,
    kind: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any],
    at: datetime,
) -> None:
    """Open a finding about a record and alarm the parties of its elevator."""
    opened = service.open_finding(
        conn,
        rule=rule,
        kind=kind,
        subject_type=subject_type,
        subject_id=subject_id,
        detail=detail,
        at=at,
    )
    if opened is None:
        return
    raise_alarm(
        conn,
        type=f"{rule.lower()}.{kind}",
        source_type="device",
        source_id=device_id,
        severity="warning",
        message=f"{device_id}: {kind.replace('_', ' ')} (rule {rule}, {subject_type} {subject_id})",
        audience=audience,
        body={
            "finding_id": opened,
            "subject_type": subject_type,
            "subject_id": subject_id,
            **detail,
        },
        at=at,
    )


def _check_technician(conn: psycopg.Connection, *, record: Record, at: datetime) -> None:
    """Rule M10: a visit by an unqualified technician (or firm) is flagged; the date of the
    visit is read at the elevator's site, whatever zone the client sent it in."""
    on = record.claimed_start.astimezone(
        ZoneInfo(service.site_timezone(conn, device_id=record.device_id))
    ).date()
    if service.is_qualified(conn, technician_id=record.technician_id, on=on):
        return
    _flag(
        conn,
        device_id=record.device_id,
        audience=("firm",),
        rule="M10",
        kind="unqualified_technician",
        subject_type="maintenance_record",
        subject_id=str(record.id),
        detail={"technician_id": record.technician_id, "firm_id": record.firm_id, "on": on},
        at=at,
    )


def sign_off(
    conn: psycopg.Connection, *, record_id: int, user_unit_id: int, signed_by: str, at: datetime
) -> None:
    """The user unit's safety manager signs a record off, once (rule M4)."""
    if not signed_by.strip():
        raise RecordError("a sign-off needs the safety manager's name")
    with conn.transaction():
        owner = service.record_user_unit(conn, record_id=record_id)
        if owner != user_unit_id:
            raise RecordError(f"record {record_id} belongs to another user unit")
        try:
            with conn.transaction():
                service.insert_signoff(
                    conn,
                    record_id=record_id,
                    user_unit_id=user_unit_id,
                    signed_by=signed_by,
                    at=at,
                )
        except psycopg.errors.UniqueViolation:
            raise RecordError(f"record {record_id} is already signed off") from None


# ---------------------------------------------------------------- evidence (rule M3)


def judge(conn: psycopg.Connection, *, record: Record, policy: Policy) -> Judgement:
    """Verdict on a record from the stored inspection-mode intervals and station events."""
    start, end = record.claimed_start, record.claimed_end
    slack = timedelta(hours=policy.evidence_slack_hours)
    minimum = policy.min_onsite_minutes
    rule_values = {
        "min_onsite_minutes": minimum,
        "evidence_slack_hours": policy.evidence_slack_hours,
    }
    found = service.inspection_intervals(
        conn, device_id=record.device_id, start=start - slack, end=end + slack
    )
    touching = [i for i in found if i.start < end and i.end > start]
    inside = [
        Interval(max(i.start, start), min(i.end, end), i.start_event_id, i.end_event_id)
        for i in touching
    ]
    evidence: dict[str, Any] = {
        "window": {"start": start, "end": end},
        "intervals": [_interval_json(i) for i in inside],
        "nearby_intervals": [_interval_json(i) for i in found if i.start >= end or i.end <= start],
    }
    minutes = sum(i.minutes for i in inside)

    def verdict(kind: Verdict) -> Judgement:
        return Judgement(
            verdict=kind,
            onsite_start=inside[0].start if inside else None,
            onsite_end=inside[-1].end if inside else None,
            onsite_minutes=minutes,
            evidence=evidence,
            rule_values=rule_values,
            span_start=touching[0].start if touching else None,
            span_end=touching[-1].end if touching else None,
        )

    if not inside:
        return verdict(Verdict.OUTSIDE_WINDOW if found else Verdict.NO_EVIDENCE)
    if minutes < minimum:
        # A visit long enough happened, but not inside the claimed window.
        long_enough = any(i.minutes >= minimum for i in found)
        return verdict(Verdict.OUTSIDE_WINDOW if long_enough else Verdict.TOO_SHORT)
    # rule M3: one visit written up as two records claims parts of the same inspection
    # interval; compare the whole intervals, not the parts each claim window clips out
    exclude = [record.id] + ([record.corrects_id] if record.corrects_id else [])
    others = service.overlapping_verified(
        conn,
        device_id=record.device_id,
        start=touching[0].start,
        end=touching[-1].end,
        exclude=exclude,
    )
    if others:
        evidence["duplicate_of"] = others
        return verdict(Verdict.DUPLICATE_VISIT)
    # the stations are judged over the whole visit too (a visit's car-top and pit work may
    # fall outside the part of it a record claims)
    stations = service.station_events(
        conn, device_id=record.device_id, start=touching[0].start, end=touching[-1].end
    )
    evidence["car_top_event_ids"] = [e["id"] for e in stations["car_top_inspection"]]
    evidence["pit_event_ids"] = [e["id"] for e in stations["pit_inspection"]]
    if not stations["car_top_inspection"] or not stations["pit_inspection"]:
        return verdict(Verdict.NO_CAR_TOP_OR_PIT)
    return verdict(Verdict.VERIFIED)


def _interval_json(interval: Interval) -> dict[str, Any]:
    return {
        "start": interval.start,
        "end": interval.end,
        "minutes": round(interval.minutes, 3),
        "start_event_id": interval.start_event_id,
        "end_event_id": interval.end_event_id,
    }


def judge_and_store(conn: psycopg.Connection, *, record: Record, now: datetime) -> Judgement:
    """Judge a record, store the verdict and evidence, and refresh the elevator's clocks."""
    with conn.transaction():
        service.lock_device(conn, device_id=record.device_id)
        policy = service.policy_for(conn, device_id=record.device_id, now=now)
        judgement = judge(conn, record=record, policy=policy)
        previous = service.current_verdict(conn, record_id=record.id)
        if previous is not None and previous["verdict"] == judgement.verdict:
            return judgement  # nothing new: do not log the same verdict twice
        service.insert_verdict(conn, record=record, judgement=judgement, at=now)
        service.refresh_clocks(conn, device_id=record.device_id, at=now)
    return judgement


def rejudge_device(conn: psycopg.Connection, *, device_id: str, now: datetime) -> int:
    """Judge again the unverified records of an elevator whose evidence may have arrived late."""
    changed = 0
    for item in service.unsettled_records(conn, device_id=device_id, now=now):
        before = service.current_verdict(conn, record_id=item.id)
        after = judge_and_store(conn, record=item, now=now)
        changed += int(before is None or before["verdict"] != after.verdict)
    return changed


# ---------------------------------------------------------------- sweep (rules M1, M2, M5, M6)


def sweep(
    conn: psycopg.Connection, *, now: datetime, device_ids: Sequence[str] | None = None
) -> SweepResult:
    """Judge finished records, move every elevator's (or these elevators') escalation state,
    and without ``device_ids`` run the M8/M10/M11/M12 checks: one transaction over the shards
    concerned (skipped when another engine holds one of them)."""
    result = SweepResult()
    with conn.transaction():
        service.without_jit(conn)
        shards, _ = service.sweep_shards(conn)
        wanted = (
            range(shards)
            if device_ids is None
            else service.shards_of(conn, device_ids=device_ids, shards=shards)
        )
        if not service.try_shard_locks(conn, shards=wanted):
            result.skipped = True  # another engine is sweeping one of them right now
            return result
        for item in service.unjudged_records(conn, now=now):
            judge_and_store(conn, record=item, now=now)
            result.verdicts += 1
        rows = service.escalation_moves(conn, now=now, device_ids=device_ids)
        # Log entries are appended last: the log's writer lock is then held only for the
        # append and the commit, not for the whole sweep (rescue steps share that log).
        log_items: list[dict[str, Any]] = []
        result.transitions = _act_on(conn, rows=rows, now=now, log_items=log_items)
        if device_ids is None:
            opened, closed = check_findings(conn, now=now, log_items=log_items)
            result.findings_opened, result.findings_closed = opened, closed
        result.elevators = service.escalation_count(conn)
        log.append_many(conn, items=log_items)
    return result


def sweep_shard(
    conn: psycopg.Connection,
    *,
    now: datetime,
    shard: int,
    shards: int,
    full_every: timedelta,
    not_within: timedelta = timedelta(0),
) -> SweepResult:
    """Sweep one shard of sites in one transaction (rules M1-M6): incrementally, only the
    elevators whose timer ran out or that were queued for a recheck; fully once per
    ``full_every`` or after a change that can move any elevator, as a check that should find
    nothing the incremental sweeps missed. Skipped when another engine holds the shard or swept
    it less than ``not_within`` ago (engines share the shards)."""
    result = SweepResult()
    with conn.transaction():
        if not service.try_shard_locks(conn, shards=[shard]):
            result.skipped = True
            return result
        service.without_jit(conn)
        last = service.shard_sweep(conn, shard=shard, shards=shards)
        if last is not None and now - last.swept_at < not_within:
            result.skipped = True  # another engine just swept it
            return result
        _, generation = service.sweep_shards(conn)
        full = (
            last is None
            or last.full_generation < generation
            or now - last.full_swept_at >= full_every
        )
        for item in service.unjudged_records(conn, now=now, shard=shard, shards=shards):
            judge_and_store(conn, record=item, now=now)
            result.verdicts += 1
        due = service.due_for_check(conn, now=now, shard=shard, shards=shards)
        if full:
            rows = service.escalation_moves(
                conn, now=now, device_ids=None, shard=shard, shards=shards
            )
            looked_for = set(due)
            result.missed = sorted(
                row["device_id"]
                for row in rows
                if row["device_id"] not in looked_for and row["previous_state"] is not None
            )
        else:
            result.examined = len(due)
            rows = service.escalation_moves(conn, now=now, device_ids=due) if due else []
        log_items: list[dict[str, Any]] = []
        result.transitions = _act_on(conn, rows=rows, now=now, log_items=log_items)
        service.mark_shard_swept(
            conn, shard=shard, shards=shards, at=now, full_generation=generation if full else None
        )
        log.append_many(conn, items=log_items)
    if result.missed:
        logger.warning(
            "full check of shard %d/%d: %d transition(s) the incremental sweeps missed: %s",
            shard,
            shards,
            len(result.missed),
            ", ".join(result.missed[:20]),
        )
    return result


def check_findings_once(conn: psycopg.Connection, *, now: datetime) -> SweepResult:
    """Run the M8/M10/M11/M12 checks in a transaction of their own, by one engine at a time."""
    result = SweepResult()
    with conn.transaction():
        if not service.try_findings_lock(conn):
            result.skipped = True
            return result
        service.without_jit(conn)
        log_items: list[dict[str, Any]] = []
        result.findings_opened, result.findings_closed = check_findings(
            conn, now=now, log_items=log_items
        )
        log.append_many(conn, items=log_items)
    return result


def _act_on(
    conn: psycopg.Connection,
    *,
    rows: list[dict[str, Any]],
    now: datetime,
    log_items: list[dict[str, Any]],
) -> list[Transition]:
    """Alarms, commands and log entries (added to ``log_items``) for one sweep's transitions."""
    transitions: list[Transition] = []
    entries = log_items
    pending: list[PendingAlarm] = []  # raised together at the end: one round trip
    for row in rows:
        state = EscalationState(row["state"])
        previous = EscalationState(row["previous_state"]) if row["previous_state"] else None
        if previous is None and state is EscalationState.OK:
            continue  # first sight of a current elevator: nothing happened
        detail = row["detail"]
        device_id = row["device_id"]
        rules = detail["rule_values"]
        lockout_id: str | None = None
        release_id: str | None = None
        alarm_body = {
            "overdue_since": detail["overdue_since"],
            "overdue_tiers": detail["overdue_tiers"],
            "rule_values": rules,
        }
        if previous in _LAPSED:
            for tier in detail.get("newly_overdue_tiers") or []:
                raise_alarm(  # rule M5: its own alarm for each further tier
                    conn,
                    type=f"maintenance.overdue.{tier}",
                    source_type="device",
                    source_id=device_id,
                    severity="major",
                    message=f"{device_id}: {tier.replace('_', '-')} maintenance overdue too",
                    audience=SELF_MONITORING_AUDIENCE,
                    body={**alarm_body, "tier": tier},
                    at=now,
                    log_items=entries,
                    pending=pending,
                )
        if state is previous:
            continue  # no transition: only a further tier fell overdue
        if state is EscalationState.OVERDUE:
            raise_alarm(  # rules M5, M7
                conn,
                type="maintenance.overdue",
                source_type="device",
                source_id=device_id,
                severity="major",
                message=f"{device_id}: maintenance overdue ({', '.join(detail['overdue_tiers'])})",
                audience=SELF_MONITORING_AUDIENCE,
                body=alarm_body,
                at=now,
                log_items=entries,
                pending=pending,
            )
        elif state is EscalationState.LOCKOUT_PENDING:
            lockout_id = service.insert_command(  # rule M6, enforce
                conn,
                device_id=device_id,
                action="lockout",
                reason=f"M6 maintenance overdue since {detail['overdue_since']}",
                at=now,
                repeat_minutes=int(rules["lockout_retry_minutes"]),
            )
            service.set_lockout_command(conn, device_id=device_id, command_id=lockout_id, at=now)
            raise_alarm(
                conn,
                type="maintenance.lockout",
                source_type="device",
                source_id=device_id,
                severity="critical",
                message=f"{device_id}: taken out of service until verified maintenance",
                audience=SELF_MONITORING_AUDIENCE,
                body={**alarm_body, "lockout_command_id": lockout_id},
                at=now,
                log_items=entries,
                pending=pending,
            )
        elif state is EscalationState.LOCKOUT_RECOMMENDED:
            if rules["lockout_mode"] == "enforce":
                # rule M6: enforcing needs the platform's own view of the car; without it the
                # lockout is only recommended, and the gap is a finding
                service.open_finding(
                    conn,
                    rule="M6",
                    kind="lockout_unverifiable",
                    subject_type="device",
                    subject_id=device_id,
                    detail={"reason": detail.get("reason")},
                    at=now,
                )
            raise_alarm(  # rule M6, recommend: alarms and log only
                conn,
                type="maintenance.lockout_recommended",
                source_type="device",
                source_id=device_id,
                severity="critical",
                message=f"{device_id}: lockout recommended, maintenance still overdue",
                audience=SELF_MONITORING_AUDIENCE,
                body=alarm_body,
                at=now,
                log_items=entries,
                pending=pending,
            )
        elif state is EscalationState.LOCKED_OUT and row["lockout_command_id"]:
            service.close_outbox(conn, command_id=row["lockout_command_id"])
        elif state in (EscalationState.OK, EscalationState.DUE_SOON):
            if row["lockout_command_id"]:
                release_id = _release(
                    conn,
                    device_id=device_id,
                    lockout_id=row["lockout_command_id"],
                    reason=f"M6 {detail.get('reason') or 'verified maintenance'}",
                    now=now,
                )
            if previous not in (None, EscalationState.OK, EscalationState.DUE_SOON):
                for alarm_type in MAINTENANCE_ALARMS:
                    clear_alarm(
                        conn,
                        type=alarm_type,
                        source_type="device",
                        source_id=device_id,
                        reason="verified maintenance",
                        at=now,
                        log_items=entries,
                    )
        transitions.append(Transition(device_id, state, previous, detail, lockout_id, release_id))
        entries.append(
            {
                "kind": "escalation.transition",
                "subject_type": "device",
                "subject_id": device_id,
                "body": {
                    "from": str(previous) if previous else None,
                    "to": str(state),
                    "lockout_command_id": lockout_id,
                    "release_command_id": release_id,
                    **detail,
                },
                "actor": service.ENGINE_ACTOR,
                "at": now,
            }
        )
    raise_pending(conn, pending=pending)
    _notify_transitions(conn, transitions=transitions)
    return transitions


def _notify_transitions(conn: psycopg.Connection, *, transitions: Sequence[Transition]) -> None:
    """Tell listeners (the live console, tests) that elevators changed state: one round trip."""
    if not transitions:
        return
    payloads = [
        json.dumps(
            {
                "device": t.device_id,
                "state": str(t.state),
                "from": str(t.previous_state) if t.previous_state else None,
            }
        )
        for t in transitions
    ]
    service.announce_transitions(conn, payloads=payloads)


def _release(
    conn: psycopg.Connection, *, device_id: str, lockout_id: str, reason: str, now: datetime
) -> str:
    """Stop re-sending the lockout and send a release (rule M6)."""
    service.close_outbox(conn, command_id=lockout_id)
    release_id = service.insert_command(
        conn, device_id=device_id, action="release", reason=reason, at=now, repeat_minutes=None
    )
    service.set_release_command(conn, device_id=device_id, command_id=release_id)
    return release_id


def override_lockout(
    conn: psycopg.Connection, *, device_id: str, user_id: int, reason: str, at: datetime
) -> str | None:
    """An authorised, logged override with a reason lifts a lockout (rule M6)."""
    if not reason.strip():
        raise RecordError("an override needs a reason")
    with conn.transaction():
        who = service.override_authority(conn, user_id=user_id, device_id=device_id)
        if who is None:
            raise RecordError(f"no active user {user_id} or no elevator {device_id!r}")
        allowed = who["role"] == "admin" or (
            who["role"] == "regulator" and who["jurisdiction_id"] == who["device_j"]
        )
        if not allowed:
            raise RecordError(f"user {who['username']} may not override a lockout")
        service.lock_device(conn, device_id=device_id)
        row = service.escalation(conn, device_id=device_id)
        states = {
            EscalationState.OVERDUE,
            EscalationState.LOCKOUT_PENDING,
            EscalationState.LOCKOUT_RECOMMENDED,
            EscalationState.LOCKED_OUT,
        }
        if row is None or row["state"] not in states:
            raise RecordError(f"{device_id} has no lockout or overdue escalation to override")
        release_id = None
        if row["lockout_command_id"]:
            release_id = _release(
                conn,
                device_id=device_id,
                lockout_id=row["lockout_command_id"],
                reason=f"override: {reason}",
                now=at,
            )
        service.mark_overridden(conn, device_id=device_id, at=at)
        _notify_transitions(
            conn,
            transitions=[
                Transition(
                    device_id,
                    EscalationState.OVERRIDDEN,
                    EscalationState(row["state"]),
                    {"reason": reason},
                    release_command_id=release_id,
                )
            ],
        )
        log.append(
            conn,
            kind="escalation.override",
            subject_type="device",
            subject_id=device_id,
            body={
                "from": row["state"],
                "to": "overridden",
                "reason": reason,
                "user_id": user_id,
                "role": who["role"],
                "release_command_id": release_id,
            },
            actor=who["username"],
            at=at,
        )
    return release_id


# ---------------------------------------------------------------- drills and findings (M8-M11)


def record_drill(
    conn: psycopg.Connection,
    *,
    device_id: str,
    held_at: datetime,
    technician_id: int | None,
    notes: str = "",
    recorded_by: str,
    at: datetime,
) -> int:
    """Record a rescue drill (rule M8)."""
    if held_at > at + FUTURE_CLAIM_TOLERANCE:
        raise RecordError("a drill cannot be recorded before it is held")
    with conn.transaction():
        drill_id = service.insert_drill(
            conn,
            device_id=device_id,
            held_at=held_at,
            technician_id=technician_id,
            notes=notes,
            recorded_by=recorded_by,
            at=at,
        )
        log.append(
            conn,
            kind="drill.held",
            subject_type="device",
            subject_id=device_id,
            body={"drill_id": drill_id, "held_at": held_at, "technician_id": technician_id},
            actor=recorded_by,
            at=at,
        )
    return drill_id


# Rule M12: the user unit asks for the periodic inspection (定期检验) a month before it is due;
# a lift whose inspection date has passed must not be used.
INSPECTION_WARNING_DAYS = 30

# Alarm severity and audience of each finding the sweep checks.
_FINDING_ALARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "drill_missing": ("warning", ("firm", "user_unit")),
    "alarm_selftest_missed": ("major", ("firm", "user_unit")),
    "inspection_lapsed": ("critical", ("firm", "user_unit", "regulator")),
    "inspection_due": ("warning", ("firm", "user_unit")),
    "certificate_expired": ("major", ("firm",)),
    "certificate_expiring": ("info", ("firm",)),
    "licence_expired": ("major", ("firm", "regulator")),
    "licence_expiring": ("warning", ("firm",)),
}


def check_findings(
    conn: psycopg.Connection, *, now: datetime, log_items: list[dict[str, Any]] | None = None
) -> tuple[int, int]:
    """Open findings for breaches of M8, M10, M11, M12 and close the ones resolved, set-based.

    Log entries go to ``log_items`` when given (the sweep appends them last), else to the log.
    """
    warning_days = service.qualification_warning_days(conn)
    entries: list[dict[str, Any]] = []
    opened = closed = 0
    for rule, kind, subject_type, select in service.FINDING_CHECKS:
        key = {"rule": rule, "kind": kind, "subject_type": subject_type}
        rows = service.apply_finding_check(
            conn,
            key=key,
            breach_sql=select,
            now=now,
            warning_days=warning_days,
            inspection_days=INSPECTION_WARNING_DAYS,
        )
        severity, audience = _FINDING_ALARMS[kind]
        for row in rows:
            opened += row["change"] == "opened"
            closed += row["change"] == "closed"
            alarm_type = f"{rule.lower()}.{kind}"
            if row["change"] == "opened":
                raise_alarm(
                    conn,
                    type=alarm_type,
                    source_type=subject_type,
                    source_id=row["subject_id"],
                    severity=severity,
                    message=f"{subject_type} {row['subject_id']}: "
                    f"{kind.replace('_', ' ')} (rule {rule})",
                    audience=audience,
                    body={"finding_id": row["id"], **row["detail"]},
                    at=now,
                    log_items=entries,
                )
            else:
                clear_alarm(
                    conn,
                    type=alarm_type,
                    source_type=subject_type,
                    source_id=row["subject_id"],
                    reason="resolved",
                    at=now,
                    log_items=entries,
                )
            entries.append(
                {
                    "kind": f"finding.{row['change']}",
                    "subject_type": subject_type,
                    "subject_id": row["subject_id"],
                    "body": {"finding_id": row["id"], **key, "detail": row["detail"]},
                    "actor": service.ENGINE_ACTOR,
                    "at": now,
                }
            )
    if log_items is None:
        log.append_many(conn, items=entries)
    else:
        log_items.extend(entries)
    return opened, closed
