"""Decisions of rule L4: judging a round, what fell due and was missed, and their alarms.

A section (a site with poles or masts) is patrolled ``patrols_per_week`` times in each local
calendar week (Monday to Monday), or, under telemetry (a pole behind a gateway), reviewed every
local day, from the control room or on a patrol (002:L41: 监控室监控的路段每日巡查). A week or a
day that ends short is a finding. Each pole or mast has its pole-head box checked, is cleaned,
has its grounding and insulation measured and its timer and photocell calibrated, each within
its interval since the last round of that kind (or its registration): past it, a finding and an
``inspection_missed.<kind>`` alarm, which becomes an inspection task. A measured value outside
its limit, or a round the technician failed, raises ``inspection_failed.<kind>``, which becomes
corrective work, until a later round of that kind passes.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts import service as alerts
from compliance.conditions.models import InspectionPolicy, inspection_policy_of
from compliance.inspections import service
from compliance.inspections.models import (
    DEVICE_ROUND_INTERVALS,
    FAILED_ALARM,
    MEASURED_UNITS,
    MISSED_ALARM,
    SECTION_ROUNDS,
    DueRound,
    MissedRound,
    Round,
    RoundError,
    RoundKind,
    alarm_type,
)
from compliance.log import service as compliance_log

ACTOR = "compliance.inspections"
AUDIENCE = ("firm", "user_unit")
# a section's weeks and days are judged when they end; after a longer outage, those that ended
# more than this long ago are not judged any more
LOOKBACK = timedelta(days=14)
# what a section's rounds count towards: on a review day either kind of round will do
WEEKLY_ROUNDS = [RoundKind.PATROL.value]
DAILY_ROUNDS = [RoundKind.PATROL.value, RoundKind.REMOTE_REVIEW.value]


def limits_of(kind: RoundKind, policy: InspectionPolicy) -> dict[str, Any]:
    """The policy values a round of ``kind`` is judged by (recorded with it)."""
    if kind is RoundKind.GROUNDING:
        return {"rule": "L4", "max_ohm": policy.grounding_max_ohm}
    if kind is RoundKind.INSULATION:
        return {
            "rule": "L4",
            "min_mohm": policy.insulation_min_mohm,
            "test_voltage_v": policy.insulation_test_v,
        }
    if kind is RoundKind.PATROL:
        return {"rule": "L4", "patrols_per_week": policy.patrols_per_week}
    if kind in DEVICE_ROUND_INTERVALS:
        return {"rule": "L4", "interval_days": getattr(policy, DEVICE_ROUND_INTERVALS[kind])}
    return {"rule": "L4"}


def verdict(
    kind: RoundKind,
    *,
    measured: float | None,
    test_voltage_v: float | None,
    passed: bool | None,
    policy: InspectionPolicy,
) -> bool:
    """Whether a round passed: a measurement against its limit, else the technician's word."""
    if kind in MEASURED_UNITS:
        if measured is None:
            raise RoundError(f"a {kind} round needs the measured value ({MEASURED_UNITS[kind]})")
        if kind is RoundKind.GROUNDING:
            judged = measured <= policy.grounding_max_ohm  # rule L4: at most 4 ohm
        else:
            if test_voltage_v is None:
                raise RoundError("an insulation round needs test_voltage_v (the megger's voltage)")
            if test_voltage_v < policy.insulation_test_v:
                raise RoundError(
                    f"insulation is measured at {policy.insulation_test_v:g} V or more, "
                    f"not {test_voltage_v:g} V"
                )
            judged = measured >= policy.insulation_min_mohm  # rule L4: at least 0.5 Mohm
        if passed is not None and passed != judged:
            raise RoundError(
                f"passed={passed} contradicts the measured {measured:g} {MEASURED_UNITS[kind]}; "
                "the platform judges it from the measurement"
            )
        return judged
    if test_voltage_v is not None:
        raise RoundError(f"a {kind} round has no test voltage")
    return True if passed is None else passed


def record_round(
    conn: psycopg.Connection,
    *,
    kind: RoundKind,
    site_id: int | None,
    device_id: str | None,
    performed_at: datetime,
    technician_id: int | None,
    measured: float | None,
    test_voltage_v: float | None,
    passed: bool | None,
    note: str,
    recorded_by: str,
    now: datetime,
) -> Round:
    """Rule L4: judge and save a round, make good the findings it answers, and raise or clear
    its failure alarm."""
    if performed_at > now:
        raise RoundError("performed_at is in the future")
    with conn.transaction():
        if kind in SECTION_ROUNDS:
            if device_id is not None or site_id is None:
                raise RoundError(f"a {kind} is of a section: give site_id, not device_id")
            sections = service.lighting_sections(conn, site_id=site_id)
            if not sections:
                raise RoundError(f"site {site_id} has no poles or masts in service")
            policy = inspection_policy_of(sections[0])
        else:
            if device_id is None:
                raise RoundError(f"a {kind} round is of one pole or mast: give device_id")
            found = service.lighting_device(conn, device_id=device_id)
            if found is None:
                raise RoundError(f"{device_id} is not a pole or mast in service")
            if site_id is not None and site_id != found["site_id"]:
                raise RoundError(f"{device_id} is not at site {site_id}")
            site_id = found["site_id"]
            policy = inspection_policy_of(found)
        assert site_id is not None
        judged = verdict(
            kind, measured=measured, test_voltage_v=test_voltage_v, passed=passed, policy=policy
        )
        saved = service.insert_round(
            conn,
            kind=kind,
            site_id=site_id,
            device_id=device_id,
            performed_at=performed_at,
            recorded_at=now,
            recorded_by=recorded_by,
            technician_id=technician_id,
            measured=measured,
            unit=MEASURED_UNITS.get(kind),
            test_voltage_v=test_voltage_v,
            passed=judged,
            limits=limits_of(kind, policy),
            note=note,
        )
        compliance_log.append(
            conn,
            kind="inspection.round",
            subject_type="device" if device_id else "site",
            subject_id=device_id or site_id,
            body=_body(saved),
            actor=recorded_by,
            at=now,
        )
        if device_id is None:
            _answer_section_findings(conn, saved=saved, policy=policy, now=now)
        else:
            _answer_device_findings(conn, saved=saved, now=now)
            _failure_alarm(conn, saved=saved, now=now)
    return saved


def _body(saved: Round) -> dict[str, Any]:
    return {
        "rule": "L4",
        "round_id": saved.id,
        "kind": str(saved.kind),
        "site_id": saved.site_id,
        "performed_at": saved.performed_at.isoformat(),
        "measured": saved.measured,
        "unit": saved.unit,
        "test_voltage_v": saved.test_voltage_v,
        "passed": saved.passed,
        "limits": saved.limits,
        "technician_id": saved.technician_id,
    }


def _answer_device_findings(conn: psycopg.Connection, *, saved: Round, now: datetime) -> None:
    """The round done late makes good the device's findings of its kind; the overdue alarm goes."""
    assert saved.device_id is not None
    for finding in service.open_device_findings(
        conn, device_id=saved.device_id, kind=saved.kind, before=saved.performed_at
    ):
        service.resolve_finding(conn, finding_id=finding.id, round_id=saved.id, at=now, done=1)
    alerts.clear_alarms_of(
        conn,
        source_type="device",
        source_id=saved.device_id,
        type=alarm_type(MISSED_ALARM, saved.kind),
        by=ACTOR,
        at=now,
        reason=f"{saved.kind} done (round {saved.id})",
    )


def _answer_section_findings(
    conn: psycopg.Connection, *, saved: Round, policy: InspectionPolicy, now: datetime
) -> None:
    """Rounds recorded late for a week or day already judged short make it good once it has
    enough."""
    for finding in service.open_section_findings(
        conn, site_id=saved.site_id, kinds=DAILY_ROUNDS, covering=saved.performed_at
    ):
        counted = WEEKLY_ROUNDS if finding.kind is RoundKind.PATROL else DAILY_ROUNDS
        if str(saved.kind) not in counted:
            continue
        done = service.count_section_rounds(
            conn,
            site_id=saved.site_id,
            kinds=counted,
            start=finding.period_start,
            end=finding.due_by,
        )
        if done >= finding.required:
            service.resolve_finding(
                conn, finding_id=finding.id, round_id=saved.id, at=now, done=done
            )
            compliance_log.append(
                conn,
                kind="inspection.finding_resolved",
                subject_type="site",
                subject_id=saved.site_id,
                body={"rule": "L4", "finding_id": finding.id, "round_id": saved.id, "done": done},
                actor=ACTOR,
                at=now,
            )


def _failure_alarm(conn: psycopg.Connection, *, saved: Round, now: datetime) -> None:
    """A failed round raises its kind's failure alarm (corrective work); a passed one clears it."""
    assert saved.device_id is not None
    failure = alarm_type(FAILED_ALARM, saved.kind)
    if saved.passed:
        alerts.clear_alarms_of(
            conn,
            source_type="device",
            source_id=saved.device_id,
            type=failure,
            by=ACTOR,
            at=now,
            reason=f"{saved.kind} passed (round {saved.id})",
        )
        return
    measured = f": {saved.measured:g} {saved.unit}" if saved.measured is not None else ""
    details = _body(saved)
    alerts.raise_alarm(
        conn,
        source_type="device",
        source_id=saved.device_id,
        type=failure,
        severity="warning",
        message=f"{saved.device_id}: {saved.kind} failed{measured}",
        audience=AUDIENCE,
        at=now,
        details=details,
    )
    compliance_log.append(
        conn,
        kind="inspection.failed",
        subject_type="device",
        subject_id=saved.device_id,
        body=details,
        actor=ACTOR,
        at=now,
    )


# -- what fell due ---------------------------------------------------------------------------------


def device_due(row: dict[str, Any], *, now: datetime) -> DueRound:
    """When one device's next round of one kind falls due: its interval after the last (or
    after the device was registered)."""
    kind = RoundKind(row["kind"])
    policy = inspection_policy_of(row)
    since = row["last_done"] or row["registered_at"]
    due_by = since + timedelta(days=getattr(policy, DEVICE_ROUND_INTERVALS[kind]))
    return DueRound(
        device_id=row["device_id"],
        site_id=row["site_id"],
        kind=kind,
        last_done=row["last_done"],
        due_by=due_by,
        overdue=now >= due_by,
    )


def due_rounds(
    conn: psycopg.Connection, *, now: datetime, devices: list[str] | None = None
) -> list[DueRound]:
    """Every pole's and mast's next round of each kind."""
    return [device_due(row, now=now) for row in device_rows(conn, devices=devices)]


def device_rows(
    conn: psycopg.Connection, *, devices: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each pole's and mast's last round of every kind, with the policy in force."""
    return service.last_device_rounds(
        conn, kinds=[k.value for k in DEVICE_ROUND_INTERVALS], devices=devices
    )


def local_periods(
    *, since: datetime, now: datetime, timezone: str, days: int
) -> list[tuple[datetime, datetime]]:
    """The complete local periods (days: 1, or weeks from Monday: 7) that began at or after
    ``since``, ended by ``now`` and ended within ``LOOKBACK``; oldest first."""
    zone = ZoneInfo(timezone)
    first = since.astimezone(zone).date()
    if days == 7:
        first += timedelta(days=(7 - first.weekday()) % 7)  # the first Monday on or after
    start = datetime.combine(first, time(), zone)
    if start < since:
        start = datetime.combine(first + timedelta(days=days), time(), zone)
    periods = []
    day: date = start.date()
    floor = (now - LOOKBACK).astimezone(zone).date() - timedelta(days=days)
    if floor > day:  # skip what lies before the look-back, keeping weeks on Mondays
        day = floor - timedelta(days=floor.weekday()) if days == 7 else floor
    while True:
        begin = datetime.combine(day, time(), zone)
        end = datetime.combine(day + timedelta(days=days), time(), zone)
        if end > now:
            return periods
        if end > now - LOOKBACK:
            periods.append((begin, end))
        day += timedelta(days=days)


def check_rounds(
    conn: psycopg.Connection, *, now: datetime, rows: list[dict[str, Any]] | None = None
) -> list[MissedRound]:
    """Rule L4: record each round not done in time as a finding, once; a device's also raises
    its overdue alarm (an inspection task). ``rows``: the devices' last rounds, when the caller
    read them already (``device_rows``). Returns the new findings."""
    found: list[MissedRound] = []
    with conn.transaction():
        for section in service.lighting_sections(conn):
            found += _check_section(conn, section=section, now=now)
        for row in device_rows(conn) if rows is None else rows:
            due = device_due(row, now=now)
            if due.overdue:
                since = row["last_done"] or row["registered_at"]
                policy = inspection_policy_of(row)
                found += _device_missed(conn, due=due, since=since, policy=policy, now=now)
    return found


def _check_section(
    conn: psycopg.Connection, *, section: dict[str, Any], now: datetime
) -> list[MissedRound]:
    policy = inspection_policy_of(section)
    if section["telemetry"]:
        kind, days, required, counted = RoundKind.REMOTE_REVIEW, 1, 1, DAILY_ROUNDS
    else:
        kind, days, required, counted = RoundKind.PATROL, 7, policy.patrols_per_week, WEEKLY_ROUNDS
    found = []
    for start, end in local_periods(
        since=section["since"], now=now, timezone=section["timezone"], days=days
    ):
        done = service.count_section_rounds(
            conn, site_id=section["site_id"], kinds=counted, start=start, end=end
        )
        if done >= required:
            continue
        finding = service.insert_finding(
            conn,
            kind=kind,
            site_id=section["site_id"],
            device_id=None,
            period_start=start,
            due_by=end,
            required=required,
            done=done,
            detected_at=now,
            policy=asdict(policy),
        )
        if finding is not None:
            _log_finding(conn, finding=finding, now=now)
            found.append(finding)
    return found


def _device_missed(
    conn: psycopg.Connection,
    *,
    due: DueRound,
    since: datetime,
    policy: InspectionPolicy,
    now: datetime,
) -> list[MissedRound]:
    finding = service.insert_finding(
        conn,
        kind=due.kind,
        site_id=due.site_id,
        device_id=due.device_id,
        period_start=since,
        due_by=due.due_by,
        required=1,
        done=0,
        detected_at=now,
        policy=asdict(policy),
    )
    if finding is None:
        return []
    _log_finding(conn, finding=finding, now=now)
    alerts.raise_alarm(
        conn,
        source_type="device",
        source_id=due.device_id,
        type=alarm_type(MISSED_ALARM, due.kind),
        severity="warning",
        message=f"{due.device_id}: {due.kind} overdue since {due.due_by:%Y-%m-%d}",
        audience=AUDIENCE,
        at=now,
        details=_finding_body(finding),
    )
    return [finding]


def _finding_body(finding: MissedRound) -> dict[str, Any]:
    return {
        "rule": "L4",
        "finding_id": finding.id,
        "kind": str(finding.kind),
        "site_id": finding.site_id,
        "period_start": finding.period_start.isoformat(),
        "due_by": finding.due_by.isoformat(),
        "required": finding.required,
        "done": finding.done,
        "policy": finding.policy,
    }


def _log_finding(conn: psycopg.Connection, *, finding: MissedRound, now: datetime) -> None:
    compliance_log.append(
        conn,
        kind="inspection.missed",
        subject_type="device" if finding.device_id else "site",
        subject_id=finding.device_id or finding.site_id,
        body=_finding_body(finding),
        actor=ACTOR,
        at=now,
    )


def next_check(rounds: list[DueRound], *, now: datetime) -> datetime:
    """When the runner looks again: the next device round falling due, or the next hour (a
    section's local day or week can end on any hour), whichever comes first."""
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    upcoming = [r.due_by for r in rounds if r.due_by > now]
    return min([next_hour, *upcoming])
