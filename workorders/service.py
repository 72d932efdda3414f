"""Database reads and writes of work orders: profiles, orders, steps, breaches, callbacks and
the working-day calendar.

Every function runs inside the caller's transaction. Every step is written to the compliance
log (rule A1) by ``add_step``, the one call site, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg.types.json import Jsonb

from compliance.log import service as compliance_log
from vigil import notify
from vigil.clock import years_before
from vigil.db.rows import columns, first_value
from workorders.models import (
    CalendarDay,
    Callback,
    CallbackDue,
    Channel,
    Complaint,
    ComplaintDeadline,
    ComplaintOut,
    ComplaintReviewRow,
    ComplaintStep,
    ComplaintStepOut,
    Deadline,
    Deadlines,
    Kind,
    Level,
    MonthlyWork,
    Origin,
    ProfileOut,
    ServiceLevel,
    Status,
    Step,
    StepOut,
    Targets,
    WorkOrder,
    WorkOrderNotFound,
    WorkOrderOut,
)

SUBJECT = "work_order"
WORK_ORDER_COLUMNS = columns(WorkOrder)
TARGET_COLUMNS = columns(Targets)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """Where a device is and who holds it: what a work order is opened with."""

    device_id: str
    kind: str
    site_id: int
    firm_id: int | None
    tier: str
    timezone: str
    jurisdiction_id: int
    latitude: float | None
    longitude: float | None


def device_facts(conn: psycopg.Connection, *, device_id: str) -> DeviceFacts:
    """Site, zone, time zone and firm in force of a device."""
    with conn.cursor(row_factory=class_row(DeviceFacts)) as cur:
        found = cur.execute(
            "SELECT d.id AS device_id, d.kind, s.id AS site_id, d.firm_id, s.tier, s.timezone, "
            "s.jurisdiction_id, s.latitude, s.longitude "
            "FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = %s",
            (device_id,),
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no device {device_id!r}")
    return found


# -- service levels (rule S1) ---------------------------------------------------------------------


def contract_profiles(conn: psycopg.Connection, *, device_id: str, on: date) -> list[str]:
    """The service-level profiles the device's contract in force on ``on`` names
    (``terms.service_levels``: one code or a list of codes)."""
    row = conn.execute(
        "SELECT terms -> 'service_levels' FROM contracts "
        "WHERE device_id = %s AND period @> %s::date",
        (device_id, on),
    ).fetchone()
    named = first_value(row)
    if named is None:
        return []
    return [named] if isinstance(named, str) else [str(code) for code in named]


def profile_targets(
    conn: psycopg.Connection, *, codes: Sequence[str], level: Level
) -> dict[str, Targets]:
    """The targets of each named profile (that exists) at one level."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT profile_code, {TARGET_COLUMNS} FROM service_level_targets "
            "WHERE profile_code = ANY(%s) AND level = %s",
            (list(codes), int(level)),
        ).fetchall()
    return {row.pop("profile_code"): Targets(**row) for row in rows}


def save_profile(
    conn: psycopg.Connection, *, code: str, name: str, targets: dict[Level, Targets]
) -> None:
    """Create or replace a profile and its targets at every level it gives."""
    conn.execute(
        "INSERT INTO service_level_profiles (code, name) VALUES (%s, %s) "
        "ON CONFLICT (code) DO UPDATE SET name = excluded.name",
        (code, name),
    )
    conn.execute("DELETE FROM service_level_targets WHERE profile_code = %s", (code,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO service_level_targets (profile_code, level, respond_min, "
            "escalate_after_min, restore_min, on_site_city_min, on_site_province_min) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    code,
                    int(level),
                    t.respond_min,
                    t.escalate_after_min,
                    t.restore_min,
                    t.on_site_city_min,
                    t.on_site_province_min,
                )
                for level, t in targets.items()
            ],
        )


def technician_firm(conn: psycopg.Connection, *, technician_id: int) -> int | None:
    """The firm of a technician; None for an unknown technician."""
    row = conn.execute("SELECT firm_id FROM technicians WHERE id = %s", (technician_id,)).fetchone()
    return first_value(row)


def inspection_since(conn: psycopg.Connection, *, device_id: str) -> datetime | None:
    """Since when an elevator is in inspection mode (service mode 2), if it is now: the time of
    the event that switched it there."""
    row = conn.execute(
        "SELECT (SELECT max(e.ts) FROM events e WHERE e.device_id = s.device_id "
        "AND e.metric = 'service_mode' AND e.value = 2) FROM device_state s "
        "WHERE s.device_id = %s AND s.metric = 'service_mode' AND s.value = 2",
        (device_id,),
    ).fetchone()
    return first_value(row)


def profiles(conn: psycopg.Connection) -> list[ProfileOut]:
    """Every service-level profile with its targets."""
    with conn.cursor(row_factory=dict_row) as cur:
        heads = cur.execute(
            "SELECT code, name, built_in FROM service_level_profiles ORDER BY code"
        ).fetchall()
        rows = cur.execute(
            f"SELECT profile_code, level, {TARGET_COLUMNS} FROM service_level_targets "
            "ORDER BY profile_code, level"
        ).fetchall()
    levels: dict[str, dict[int, Targets]] = {}
    for row in rows:
        code, level = row.pop("profile_code"), row.pop("level")
        levels.setdefault(code, {})[level] = Targets(**row)
    return [ProfileOut(**head, levels=levels.get(head["code"], {})) for head in heads]


def is_built_in(conn: psycopg.Connection, *, code: str) -> bool:
    """Whether a profile is one of the built-in defaults of RULES.md."""
    row = conn.execute(
        "SELECT built_in FROM service_level_profiles WHERE code = %s", (code,)
    ).fetchone()
    return bool(first_value(row))


# -- work orders ----------------------------------------------------------------------------------


def insert_work_order(
    conn: psycopg.Connection,
    *,
    facts: DeviceFacts,
    kind: Kind,
    cause: str,
    origin: Origin,
    source_ref: str | None,
    title: str,
    service_level: ServiceLevel,
    deadlines: Deadlines,
    opened_at: datetime,
    repeat_of: int | None,
) -> WorkOrder | None:
    """Open a work order; None when the device has an open one for this cause."""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        return cur.execute(
            "INSERT INTO work_orders (device_id, site_id, firm_id, kind, cause, level, origin, "
            "source_ref, title, zone, service_level, opened_at, respond_by, escalate_at, "
            "on_site_by, restore_by, repeat_of) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            f"RETURNING {WORK_ORDER_COLUMNS}",
            (
                facts.device_id,
                facts.site_id,
                facts.firm_id,
                str(kind),
                cause,
                int(service_level.level),
                str(origin),
                source_ref,
                title,
                str(service_level.zone),
                Jsonb(service_level.as_json()),
                opened_at,
                deadlines.respond_by,
                deadlines.escalate_at,
                deadlines.on_site_by,
                deadlines.restore_by,
                repeat_of,
            ),
        ).fetchone()


def get_work_order(
    conn: psycopg.Connection, *, work_order_id: int, lock: bool = False
) -> WorkOrder:
    """One work order by id."""
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        found = cur.execute(
            f"SELECT {WORK_ORDER_COLUMNS} FROM work_orders WHERE id = %s{suffix}",
            (work_order_id,),
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no work order {work_order_id}")
    return found


def open_order_of(
    conn: psycopg.Connection, *, device_id: str, cause: str, lock: bool = False
) -> WorkOrder | None:
    """The open work order of a device and cause, if any."""
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        return cur.execute(
            f"SELECT {WORK_ORDER_COLUMNS} FROM work_orders WHERE device_id = %s AND cause = %s "
            f"AND status IN ('opened', 'assigned', 'accepted', 'on_site'){suffix}",
            (device_id, cause),
        ).fetchone()


def take_source(
    conn: psycopg.Connection, *, origin: Origin, source_ref: str, work_order_id: int, at: datetime
) -> bool:
    """Record that a source was turned into work on this order; False when it already was."""
    row = conn.execute(
        "INSERT INTO work_order_sources (origin, source_ref, work_order_id, taken_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (str(origin), source_ref, work_order_id, at),
    ).fetchone()
    return row is not None


def order_of_source(
    conn: psycopg.Connection, *, origin: Origin, source_ref: str
) -> WorkOrder | None:
    """The work order a source was turned into, if it was."""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        return cur.execute(
            f"SELECT {columns(WorkOrder, table='w')} FROM work_order_sources s "
            "JOIN work_orders w ON w.id = s.work_order_id "
            "WHERE s.origin = %s AND s.source_ref = %s",
            (str(origin), source_ref),
        ).fetchone()


def earlier_order(
    conn: psycopg.Connection, *, device_id: str, cause: str, since: datetime
) -> int | None:
    """Rule S5: the latest work order of the same fault on the same device opened since
    ``since`` (cancelled ones were no fault)."""
    row = conn.execute(
        "SELECT max(id) FROM work_orders WHERE device_id = %s AND cause = %s "
        "AND opened_at >= %s AND status <> 'cancelled'",
        (device_id, cause, since),
    ).fetchone()
    return first_value(row)


def update_work_order(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    status: Status | None = None,
    technician_id: int | None = None,
    responded_at: datetime | None = None,
    on_site_at: datetime | None = None,
    resolved_at: datetime | None = None,
    closed_at: datetime | None = None,
) -> WorkOrder:
    """Move a work order and fill in what happened (a time once set stays)."""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        found = cur.execute(
            "UPDATE work_orders SET status = coalesce(%s, status), "
            "technician_id = coalesce(%s, technician_id), "
            "responded_at = coalesce(responded_at, %s), on_site_at = coalesce(on_site_at, %s), "
            "resolved_at = coalesce(resolved_at, %s), closed_at = coalesce(closed_at, %s) "
            f"WHERE id = %s RETURNING {WORK_ORDER_COLUMNS}",
            (
                str(status) if status else None,
                technician_id,
                responded_at,
                on_site_at,
                resolved_at,
                closed_at,
                work_order_id,
            ),
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no work order {work_order_id}")
    return found


def count_repeat(conn: psycopg.Connection, *, work_order_id: int, at: datetime) -> WorkOrder:
    """The same cause happened again while the order is open: count it there."""
    with conn.cursor(row_factory=class_row(WorkOrder)) as cur:
        found = cur.execute(
            "UPDATE work_orders SET repeats = repeats + 1, last_repeat_at = %s "
            f"WHERE id = %s RETURNING {WORK_ORDER_COLUMNS}",
            (at, work_order_id),
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no work order {work_order_id}")
    return found


def _append_step(
    conn: psycopg.Connection,
    *,
    subject: str,
    subject_id: int,
    step: str,
    at: datetime,
    actor: str,
    note: str,
    details: dict[str, Any] | None,
) -> None:
    """Append a step to a work order's or a complaint's timeline (``<subject>_steps``) and to
    the compliance log (rule A1), in the caller's transaction."""
    details = details or {}
    conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({key}, step, at, actor, note, details) "
            "VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(table=sql.Identifier(f"{subject}_steps"), key=sql.Identifier(f"{subject}_id")),
        (subject_id, step, at, actor, note, Jsonb(details)),
    )
    compliance_log.append(
        conn,
        kind=f"{subject}.{step}",
        subject_type=subject,
        subject_id=subject_id,
        body={"note": note, **details},
        actor=actor,
        at=at,
    )


def add_step(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    step: Step,
    at: datetime,
    actor: str,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Append a step to a work order's timeline and to the compliance log (rule A1)."""
    _append_step(
        conn,
        subject=SUBJECT,
        subject_id=work_order_id,
        step=str(step),
        at=at,
        actor=actor,
        note=note,
        details=details,
    )


def announce(conn: psycopg.Connection, *, order: WorkOrder, change: str) -> None:
    """Tell the live console (and tests) that a work order changed, on commit."""
    payload = {
        "kind": "work_order",
        "change": change,
        "id": order.id,
        "device": order.device_id,
        "status": str(order.status),
    }
    notify.send(conn, notify.ALERTS, [json.dumps(payload)])


def steps(conn: psycopg.Connection, *, work_order_id: int) -> list[StepOut]:
    """The timeline of a work order, oldest first."""
    with conn.cursor(row_factory=class_row(StepOut)) as cur:
        return cur.execute(
            "SELECT step, at, actor, note, details FROM work_order_steps "
            "WHERE work_order_id = %s ORDER BY id",
            (work_order_id,),
        ).fetchall()


def step_time(conn: psycopg.Connection, *, work_order_id: int, step: Step) -> datetime | None:
    """When the latest step of this kind was taken."""
    row = conn.execute(
        "SELECT max(at) FROM work_order_steps WHERE work_order_id = %s AND step = %s",
        (work_order_id, str(step)),
    ).fetchone()
    return first_value(row)


def has_step(conn: psycopg.Connection, *, work_order_id: int, step: Step) -> bool:
    """Whether the timeline holds a step of this kind."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM work_order_steps WHERE work_order_id = %s AND step = %s)",
        (work_order_id, str(step)),
    ).fetchone()
    return bool(first_value(row))


# -- deadlines and escalation (rules S1, S2) ------------------------------------------------------


def record_breach(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    deadline: Deadline,
    due_at: datetime,
    detected_at: datetime,
) -> bool:
    """Record a missed deadline once; True when it is new."""
    return _record_breach(
        conn,
        subject=SUBJECT,
        subject_id=work_order_id,
        deadline=str(deadline),
        due_at=due_at,
        detected_at=detected_at,
    )


def _record_breach(
    conn: psycopg.Connection,
    *,
    subject: str,
    subject_id: int,
    deadline: str,
    due_at: datetime,
    detected_at: datetime,
) -> bool:
    """Record a missed deadline of a work order or a complaint (``<subject>_breaches``) once."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({key}, deadline, due_at, detected_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1"
        ).format(table=sql.Identifier(f"{subject}_breaches"), key=sql.Identifier(f"{subject}_id")),
        (subject_id, deadline, due_at, detected_at),
    ).fetchone()
    return row is not None


def _breaches(conn: psycopg.Connection, *, subject: str, subject_id: int) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT deadline FROM {table} WHERE {key} = %s ORDER BY due_at").format(
            table=sql.Identifier(f"{subject}_breaches"), key=sql.Identifier(f"{subject}_id")
        ),
        (subject_id,),
    ).fetchall()
    return [first_value(row) for row in rows]


def breaches(conn: psycopg.Connection, *, work_order_id: int) -> list[Deadline]:
    """The deadlines a work order missed."""
    return [Deadline(d) for d in _breaches(conn, subject=SUBJECT, subject_id=work_order_id)]


# An open deadline: not met and not yet recorded as missed.
_PENDING = """
    SELECT w.id, d.deadline, d.due_at FROM work_orders w
    CROSS JOIN LATERAL (VALUES
        ('respond', w.respond_by, w.responded_at),
        ('on_site', w.on_site_by, w.on_site_at),
        ('restore', w.restore_by, w.resolved_at)) AS d (deadline, due_at, met_at)
    WHERE w.status NOT IN ('closed', 'cancelled') AND d.due_at IS NOT NULL
      AND d.met_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM work_order_breaches b
                      WHERE b.work_order_id = w.id AND b.deadline = d.deadline)
"""


def missed_deadlines(
    conn: psycopg.Connection, *, now: datetime
) -> list[tuple[int, Deadline, datetime]]:
    """Deadlines passed and not met, not yet recorded: (work order, deadline, due)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            f"SELECT id, deadline, due_at FROM ({_PENDING}) p WHERE due_at < %s "
            "ORDER BY due_at, id",
            (now,),
        ).fetchall()
    return [(row[0], Deadline(row[1]), row[2]) for row in rows]


def due_escalations(conn: psycopg.Connection, *, now: datetime) -> list[int]:
    """Rule S2: unresolved work orders whose escalation time has come and that have not
    escalated yet."""
    rows = conn.execute(
        "SELECT w.id FROM work_orders w WHERE w.status IN ('opened', 'assigned', 'accepted', "
        "'on_site') AND w.escalate_at <= %s AND NOT EXISTS (SELECT 1 FROM work_order_steps s "
        "WHERE s.work_order_id = w.id AND s.step = 'escalated') ORDER BY w.id",
        (now,),
    ).fetchall()
    return [first_value(row) for row in rows]


def next_due(conn: psycopg.Connection) -> datetime | None:
    """When the next deadline or escalation of an open work order, or deadline of an open
    complaint, falls due."""
    row = conn.execute(
        f"SELECT min(due) FROM (SELECT due_at AS due FROM ({_PENDING}) p "
        f"UNION ALL SELECT due_at FROM ({_COMPLAINT_PENDING}) c "
        "UNION ALL SELECT w.escalate_at FROM work_orders w "
        "WHERE w.status IN ('opened', 'assigned', 'accepted', 'on_site') "
        "AND NOT EXISTS (SELECT 1 FROM work_order_steps s WHERE s.work_order_id = w.id "
        "AND s.step = 'escalated')) d"
    ).fetchone()
    return first_value(row)


# -- callbacks (rule S4) --------------------------------------------------------------------------


def add_callback(
    conn: psycopg.Connection,
    *,
    work_order_id: int,
    at: datetime,
    actor: str,
    reached: bool,
    satisfaction: int | None,
    note: str,
) -> Callback:
    """Record one call back to the customer."""
    with conn.cursor(row_factory=class_row(Callback)) as cur:
        made = cur.execute(
            "INSERT INTO work_order_callbacks (work_order_id, at, actor, reached, satisfaction, "
            f"note) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {columns(Callback)}",
            (work_order_id, at, actor, reached, satisfaction, note),
        ).fetchone()
    assert made is not None
    return made


async def callbacks_due(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    now: datetime,
    retry: timedelta,
) -> list[CallbackDue]:
    """Rule S4: resolved work orders in scope whose customer was not reached yet, due now (at
    once after the resolution, ``retry`` after an unreached call), the longest waiting first."""
    query = sql.SQL(
        "SELECT w.id AS work_order_id, w.device_id, w.title, w.resolved_at, "
        "count(c.id) AS attempts, max(c.at) AS last_attempt_at, "
        "coalesce(max(c.at) + %(retry)s, w.resolved_at) AS due_at "
        "FROM work_orders w LEFT JOIN work_order_callbacks c ON c.work_order_id = w.id "
        "WHERE w.status = 'resolved' "
        "AND w.device_id IN (SELECT d.id FROM devices d WHERE {scope}) "
        "GROUP BY w.id HAVING coalesce(max(c.at) + %(retry)s, w.resolved_at) <= %(now)s "
        "ORDER BY due_at, w.id"
    ).format(scope=scope)
    async with conn.cursor(row_factory=class_row(CallbackDue)) as cur:
        await cur.execute(query, {**scope_params, "retry": retry, "now": now})
        return await cur.fetchall()


def callbacks(conn: psycopg.Connection, *, work_order_id: int) -> list[Callback]:
    """Every callback of a work order, oldest first."""
    with conn.cursor(row_factory=class_row(Callback)) as cur:
        return cur.execute(
            f"SELECT {columns(Callback)} FROM work_order_callbacks WHERE work_order_id = %s "
            "ORDER BY id",
            (work_order_id,),
        ).fetchall()


# -- working-day calendar (rule S3) ---------------------------------------------------------------


def calendar_overrides(
    conn: psycopg.Connection, *, jurisdiction_id: int, start: date, end: date
) -> dict[date, bool]:
    """Holidays (False) and make-up working days (True) of a jurisdiction between two days."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT day, working FROM calendar_days WHERE jurisdiction_id = %s "
            "AND day BETWEEN %s AND %s",
            (jurisdiction_id, start, end),
        ).fetchall()
    return dict(rows)


def calendar(
    conn: psycopg.Connection, *, jurisdiction_id: int, start: date, end: date
) -> list[CalendarDay]:
    """The holidays and make-up working days of a jurisdiction between two days."""
    with conn.cursor(row_factory=class_row(CalendarDay)) as cur:
        return cur.execute(
            "SELECT jurisdiction_id, day, working, name FROM calendar_days "
            "WHERE jurisdiction_id = %s AND day BETWEEN %s AND %s ORDER BY day",
            (jurisdiction_id, start, end),
        ).fetchall()


def clear_calendar_day(conn: psycopg.Connection, *, jurisdiction_id: int, day: date) -> bool:
    """Make a day an ordinary one again; False when it was."""
    cur = conn.execute(
        "DELETE FROM calendar_days WHERE jurisdiction_id = %s AND day = %s",
        (jurisdiction_id, day),
    )
    return cur.rowcount > 0


def jurisdiction_exists(conn: psycopg.Connection, *, jurisdiction_id: int) -> bool:
    """Whether a jurisdiction of this id exists."""
    row = conn.execute("SELECT 1 FROM jurisdictions WHERE id = %s", (jurisdiction_id,)).fetchone()
    return row is not None


def jurisdiction_id_of(conn: psycopg.Connection, *, code: str) -> int | None:
    """The id of the jurisdiction of this code."""
    row = conn.execute("SELECT id FROM jurisdictions WHERE code = %s", (code,)).fetchone()
    return first_value(row)


def set_calendar_day(
    conn: psycopg.Connection, *, jurisdiction_id: int, day: date, working: bool, name: str = ""
) -> None:
    """Declare a day a holiday (not working) or a make-up working day."""
    conn.execute(
        "INSERT INTO calendar_days (jurisdiction_id, day, working, name) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (jurisdiction_id, day) DO UPDATE SET working = excluded.working, "
        "name = excluded.name",
        (jurisdiction_id, day, working, name),
    )


# -- scoped reads for the API (rule A2) -----------------------------------------------------------


async def list_scoped(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    statuses: Sequence[Status] | None = None,
    level: int | None = None,
    limit: int = 500,
) -> list[WorkOrderOut]:
    """Work orders on devices in scope, the most urgent deadline first."""
    where = [sql.SQL("w.device_id IN (SELECT d.id FROM devices d WHERE {})").format(scope)]
    params = dict(scope_params)
    if statuses:
        where.append(sql.SQL("w.status = ANY(%(statuses)s)"))
        params["statuses"] = [str(s) for s in statuses]
    if level is not None:
        where.append(sql.SQL("w.level = %(level)s"))
        params["level"] = level
    params["limit"] = limit
    query = sql.SQL(
        "SELECT {columns}, coalesce((SELECT array_agg(b.deadline ORDER BY b.due_at) "
        "FROM work_order_breaches b WHERE b.work_order_id = w.id), '{{}}') AS breaches "
        "FROM work_orders w WHERE {where} "
        "ORDER BY (w.status IN ('closed', 'cancelled')), "
        "least(w.respond_by, w.on_site_by, coalesce(w.restore_by, w.on_site_by)), w.id "
        "LIMIT %(limit)s"
    ).format(columns=sql.SQL(columns(WorkOrder, table="w")), where=sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [WorkOrderOut.model_validate(row) for row in await cur.fetchall()]


async def get_scoped(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    work_order_id: int,
) -> WorkOrderOut | None:
    """One work order, if its device is in scope."""
    query = sql.SQL(
        "SELECT {columns}, coalesce((SELECT array_agg(b.deadline ORDER BY b.due_at) "
        "FROM work_order_breaches b WHERE b.work_order_id = w.id), '{{}}') AS breaches "
        "FROM work_orders w WHERE w.id = %(id)s "
        "AND w.device_id IN (SELECT d.id FROM devices d WHERE {scope})"
    ).format(columns=sql.SQL(columns(WorkOrder, table="w")), scope=scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "id": work_order_id})
        row = await cur.fetchone()
    return WorkOrderOut.model_validate(row) if row else None


# -- complaints (rules S3, S5) --------------------------------------------------------------------

COMPLAINT_SUBJECT = "complaint"
COMPLAINT_COLUMNS = columns(Complaint)


def insert_complaint(
    conn: psycopg.Connection,
    *,
    facts: DeviceFacts,
    received_at: datetime,
    channel: Channel,
    complainant: str,
    contact: str,
    subject: str,
    answer_by: datetime,
    outcome_by: datetime,
) -> Complaint:
    """Register a complaint."""
    with conn.cursor(row_factory=class_row(Complaint)) as cur:
        made = cur.execute(
            "INSERT INTO complaints (device_id, site_id, firm_id, received_at, channel, "
            "complainant, contact, subject, answer_by, outcome_by) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COMPLAINT_COLUMNS}",
            (
                facts.device_id,
                facts.site_id,
                facts.firm_id,
                received_at,
                str(channel),
                complainant,
                contact,
                subject,
                answer_by,
                outcome_by,
            ),
        ).fetchone()
    assert made is not None
    return made


def get_complaint(conn: psycopg.Connection, *, complaint_id: int, lock: bool = False) -> Complaint:
    """One complaint by id."""
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor(row_factory=class_row(Complaint)) as cur:
        found = cur.execute(
            f"SELECT {COMPLAINT_COLUMNS} FROM complaints WHERE id = %s{suffix}", (complaint_id,)
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no complaint {complaint_id}")
    return found


def update_complaint(conn: psycopg.Connection, *, complaint_id: int, **fields: Any) -> Complaint:
    """Set some fields of a complaint (a time once set stays)."""
    allowed = {
        "status",
        "answered_at",
        "outcome_sent_at",
        "cause",
        "responsible_party",
        "solution",
        "work_order_id",
        "closed_at",
    }
    if not fields or set(fields) - allowed:
        raise ValueError(f"cannot set {sorted(set(fields) - allowed)} on a complaint")
    keep_first = {"answered_at", "outcome_sent_at", "closed_at"}
    assignments = sql.SQL(", ").join(
        sql.SQL("{c} = coalesce({c}, %({k})s)" if k in keep_first else "{c} = %({k})s").format(
            c=sql.Identifier(k), k=sql.SQL(k)
        )
        for k in fields
    )
    values = {k: str(v) if isinstance(v, StrEnum) else v for k, v in fields.items()}
    with conn.cursor(row_factory=class_row(Complaint)) as cur:
        found = cur.execute(
            sql.SQL("UPDATE complaints SET {a} WHERE id = %(id)s RETURNING {c}").format(
                a=assignments, c=sql.SQL(COMPLAINT_COLUMNS)
            ),
            {**values, "id": complaint_id},
        ).fetchone()
    if found is None:
        raise WorkOrderNotFound(f"no complaint {complaint_id}")
    return found


def add_complaint_step(
    conn: psycopg.Connection,
    *,
    complaint_id: int,
    step: ComplaintStep,
    at: datetime,
    actor: str,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Append a step to a complaint's timeline and to the compliance log (rule A1)."""
    _append_step(
        conn,
        subject=COMPLAINT_SUBJECT,
        subject_id=complaint_id,
        step=str(step),
        at=at,
        actor=actor,
        note=note,
        details=details,
    )


def complaint_steps(conn: psycopg.Connection, *, complaint_id: int) -> list[ComplaintStepOut]:
    """The timeline of a complaint, oldest first."""
    with conn.cursor(row_factory=class_row(ComplaintStepOut)) as cur:
        return cur.execute(
            "SELECT step, at, actor, note, details FROM complaint_steps "
            "WHERE complaint_id = %s ORDER BY id",
            (complaint_id,),
        ).fetchall()


def record_complaint_breach(
    conn: psycopg.Connection,
    *,
    complaint_id: int,
    deadline: ComplaintDeadline,
    due_at: datetime,
    detected_at: datetime,
) -> bool:
    """Record a missed answer or outcome deadline once; True when it is new."""
    return _record_breach(
        conn,
        subject=COMPLAINT_SUBJECT,
        subject_id=complaint_id,
        deadline=str(deadline),
        due_at=due_at,
        detected_at=detected_at,
    )


def complaint_breaches(conn: psycopg.Connection, *, complaint_id: int) -> list[ComplaintDeadline]:
    """The deadlines a complaint missed."""
    found = _breaches(conn, subject=COMPLAINT_SUBJECT, subject_id=complaint_id)
    return [ComplaintDeadline(d) for d in found]


_COMPLAINT_PENDING = """
    SELECT c.id, d.deadline, d.due_at FROM complaints c
    CROSS JOIN LATERAL (VALUES
        ('answer', c.answer_by, c.answered_at),
        ('outcome', c.outcome_by, c.outcome_sent_at)) AS d (deadline, due_at, met_at)
    WHERE c.status <> 'closed' AND d.met_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM complaint_breaches b
                      WHERE b.complaint_id = c.id AND b.deadline = d.deadline)
"""


def missed_complaint_deadlines(conn: psycopg.Connection, *, now: datetime) -> list[int]:
    """Complaints with an answer or outcome deadline passed unmet and not yet recorded."""
    rows = conn.execute(
        f"SELECT DISTINCT id FROM ({_COMPLAINT_PENDING}) p WHERE due_at < %s ORDER BY id", (now,)
    ).fetchall()
    return [first_value(row) for row in rows]


def next_complaint_due(conn: psycopg.Connection) -> datetime | None:
    """When the next answer or outcome deadline of an open complaint falls due."""
    row = conn.execute(f"SELECT min(due_at) FROM ({_COMPLAINT_PENDING}) p").fetchone()
    return first_value(row)


def _scoped_complaints(scope: sql.Composable, where: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "SELECT {columns}, coalesce((SELECT array_agg(b.deadline ORDER BY b.due_at) "
        "FROM complaint_breaches b WHERE b.complaint_id = c.id), '{{}}') AS breaches "
        "FROM complaints c WHERE c.device_id IN (SELECT d.id FROM devices d WHERE {scope}) "
        "AND {where}"
    ).format(columns=sql.SQL(columns(Complaint, table="c")), scope=scope, where=where)


async def list_scoped_complaints(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    open_only: bool,
    limit: int = 500,
) -> list[ComplaintOut]:
    """Complaints about assets in scope, the nearest outcome deadline first."""
    where = sql.SQL("c.status <> 'closed'" if open_only else "true")
    query = sql.SQL("{q} ORDER BY c.outcome_by, c.id LIMIT %(limit)s").format(
        q=_scoped_complaints(scope, where)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "limit": limit})
        return [ComplaintOut.model_validate(row) for row in await cur.fetchall()]


async def get_scoped_complaint(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    complaint_id: int,
) -> ComplaintOut | None:
    """One complaint, if its asset is in scope."""
    query = _scoped_complaints(scope, sql.SQL("c.id = %(id)s"))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "id": complaint_id})
        row = await cur.fetchone()
    return ComplaintOut.model_validate(row) if row else None


# -- retention (rule A3) --------------------------------------------------------------------------


def purge(conn: psycopg.Connection, *, now: datetime, years: int) -> tuple[int, int]:
    """Rule A3: delete complaints and work orders (with their steps, breaches, callbacks)
    closed more than ``years`` before ``now``, unless a kept row names them or a signed
    checkpoint does not cover their history yet; their log entries stay. How many complaints
    and orders went."""
    complaints_expired = sql.SQL(
        "SELECT c.id FROM complaints c WHERE c.closed_at < %(before)s AND NOT {beyond}"
    ).format(beyond=compliance_log.beyond_checkpoint(COMPLAINT_SUBJECT, sql.SQL("c.id")))
    orders_expired = sql.SQL(
        "SELECT w.id FROM work_orders w WHERE w.closed_at < %(before)s AND NOT {beyond}"
    ).format(beyond=compliance_log.beyond_checkpoint(SUBJECT, sql.SQL("w.id")))
    params = {"before": years_before(now, years)}
    with conn.transaction():
        compliance_log.allow_purge(conn)
        complaints = {first_value(r) for r in conn.execute(complaints_expired, params).fetchall()}
        orders = {first_value(r) for r in conn.execute(orders_expired, params).fetchall()}
        while orders:  # an order a kept complaint or a kept repeat names is kept too
            named = conn.execute(
                "SELECT work_order_id FROM complaints WHERE work_order_id = ANY(%(o)s) "
                "AND NOT id = ANY(%(c)s) UNION SELECT repeat_of FROM work_orders "
                "WHERE repeat_of = ANY(%(o)s) AND NOT id = ANY(%(o)s)",
                {"o": list(orders), "c": list(complaints)},
            ).fetchall()
            if not named:
                break
            orders -= {first_value(r) for r in named}
        gone_c, gone_o = list(complaints), list(orders)
        for table in ("complaint_steps", "complaint_breaches"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE complaint_id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (gone_c,),
            )
        conn.execute("DELETE FROM complaints WHERE id = ANY(%s)", (gone_c,))
        for table in (
            "work_order_sources",
            "work_order_callbacks",
            "work_order_breaches",
            "work_order_steps",
        ):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE work_order_id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (gone_o,),
            )
        conn.execute("DELETE FROM work_orders WHERE id = ANY(%s)", (gone_o,))
    return len(gone_c), len(gone_o)


# -- the monthly firm report (rule A4) ------------------------------------------------------------

_MONTH_SCOPE = """
    SELECT d.id, %(first)s::date::timestamp AT TIME ZONE si.timezone AS lo,
           %(after)s::date::timestamp AT TIME ZONE si.timezone AS hi
    FROM devices d JOIN sites si ON si.id = d.site_id WHERE ({scope})
"""

_MONTHLY_WORK = """
WITH scoped AS ({month_scope}),
orders AS (
    SELECT w.firm_id, w.level, w.repeat_of,
           EXISTS (SELECT 1 FROM work_order_breaches b WHERE b.work_order_id = w.id) AS breached
    FROM work_orders w JOIN scoped s ON s.id = w.device_id
    WHERE w.opened_at >= s.lo AND w.opened_at < s.hi AND w.status <> 'cancelled'
      AND w.firm_id IS NOT NULL
), calls AS (
    SELECT w.firm_id, c.reached, c.satisfaction
    FROM work_order_callbacks c JOIN work_orders w ON w.id = c.work_order_id
    JOIN scoped s ON s.id = w.device_id
    WHERE c.at >= s.lo AND c.at < s.hi AND w.firm_id IS NOT NULL
), complaints_in AS (
    SELECT c.firm_id, c.answered_at IS NOT NULL AND c.answered_at <= c.answer_by AS answered,
           c.outcome_sent_at IS NOT NULL AND c.outcome_sent_at <= c.outcome_by AS outcome
    FROM complaints c JOIN scoped s ON s.id = c.device_id
    WHERE c.received_at >= s.lo AND c.received_at < s.hi AND c.firm_id IS NOT NULL
), firms AS (
    SELECT firm_id FROM orders UNION SELECT firm_id FROM calls
    UNION SELECT firm_id FROM complaints_in
)
SELECT f.firm_id,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id) AS work_orders,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id AND o.level = 1)
           AS work_orders_level_1,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id AND o.level = 2)
           AS work_orders_level_2,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id AND o.level = 3)
           AS work_orders_level_3,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id AND o.level = 4)
           AS work_orders_level_4,
       (SELECT avg(CASE WHEN o.breached THEN 0.0 ELSE 1.0 END)::float8 FROM orders o
         WHERE o.firm_id = f.firm_id) AS work_orders_within_sla,
       (SELECT count(*) FROM orders o WHERE o.firm_id = f.firm_id AND o.repeat_of IS NOT NULL)
           AS repeat_faults,
       (SELECT count(*) FROM complaints_in c WHERE c.firm_id = f.firm_id) AS complaints,
       (SELECT avg(CASE WHEN c.answered THEN 1.0 ELSE 0.0 END)::float8 FROM complaints_in c
         WHERE c.firm_id = f.firm_id) AS complaints_answered_in_time,
       (SELECT avg(CASE WHEN c.outcome THEN 1.0 ELSE 0.0 END)::float8 FROM complaints_in c
         WHERE c.firm_id = f.firm_id) AS complaints_outcome_in_time,
       (SELECT count(*) FROM calls c WHERE c.firm_id = f.firm_id AND c.reached)
           AS callbacks_reached,
       (SELECT count(*) FROM calls c WHERE c.firm_id = f.firm_id AND NOT c.reached)
           AS callbacks_unreached,
       (SELECT avg(c.satisfaction)::float8 FROM calls c WHERE c.firm_id = f.firm_id)
           AS mean_satisfaction
FROM firms f
"""


async def monthly_work(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    first: date,
    after: date,
) -> dict[int, MonthlyWork]:
    """Rule A4: each firm's work orders (by level, within their deadlines, repeat faults),
    complaints (answered and outcome in time) and callbacks (reached, satisfaction) of a
    month, over the devices in ``scope``, by the firm in force when each came in."""
    month_scope = sql.SQL(_MONTH_SCOPE).format(scope=scope)
    query = sql.SQL(_MONTHLY_WORK).format(month_scope=month_scope)
    async with conn.cursor(row_factory=class_row(MonthlyWork)) as cur:
        await cur.execute(query, {**scope_params, "first": first, "after": after})
        return {row.firm_id: row for row in await cur.fetchall()}


async def complaints_of_month(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    first: date,
    after: date,
) -> list[ComplaintReviewRow]:
    """Rule S5: the complaints received in a month about assets in scope, for the monthly
    review: cause, responsible party, deadlines kept, follow-up work, repeat faults."""
    query = sql.SQL(
        "WITH scoped AS ({month_scope}) "
        "SELECT c.id, c.device_id, c.site_id, c.firm_id, c.received_at, c.channel, c.subject, "
        "c.cause, c.responsible_party, c.status, "
        "coalesce(c.answered_at <= c.answer_by, false) AS answered_in_time, "
        "coalesce(c.outcome_sent_at <= c.outcome_by, false) AS outcome_in_time, "
        "c.work_order_id, EXISTS (SELECT 1 FROM work_orders w WHERE w.device_id = c.device_id "
        "AND w.repeat_of IS NOT NULL AND w.opened_at >= s.lo AND w.opened_at < s.hi) "
        "AS repeat_fault "
        "FROM complaints c JOIN scoped s ON s.id = c.device_id "
        "WHERE c.received_at >= s.lo AND c.received_at < s.hi ORDER BY c.received_at, c.id"
    ).format(month_scope=sql.SQL(_MONTH_SCOPE).format(scope=scope))
    async with conn.cursor(row_factory=class_row(ComplaintReviewRow)) as cur:
        await cur.execute(query, {**scope_params, "first": first, "after": after})
        return await cur.fetchall()


# -- figures for the metrics endpoint --------------------------------------------------------------


def breach_counts(conn: psycopg.Connection) -> list[tuple[dict[str, str], float]]:
    """Service-level deadlines missed, ever: work orders' (S1) and complaints' (S3)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT 'work_order.' || deadline, count(*) FROM work_order_breaches GROUP BY deadline "
            "UNION ALL "
            "SELECT 'complaint.' || deadline, count(*) FROM complaint_breaches GROUP BY deadline"
        ).fetchall()
    return [({"kind": kind}, float(count)) for kind, count in rows]
