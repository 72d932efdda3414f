"""Database reads and writes of rescue: lift state, incidents, steps, dispatches, breaches.

Every function runs inside the caller's transaction. Every step and breach is written to the
compliance log (rule A1) through ``log_fact``, the one call site, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg.types.json import Jsonb

from compliance.log import service as compliance_log
from compliance.log.models import canonical_json
from compliance.rescue.models import (
    DETECTION_METRICS,
    Candidate,
    CoverageRow,
    Dispatch,
    DispatchOut,
    FirmLoad,
    Incident,
    IncidentNotFound,
    IncidentOut,
    IncidentStep,
    LiftState,
    Place,
    Status,
    Step,
    StepOut,
    TechnicianPosition,
    Trigger,
)
from vigil import notify
from vigil.db.rows import columns, first_value

SUBJECT = "rescue_incident"


INCIDENT_COLUMNS = columns(Incident)


def log_fact(
    conn: psycopg.Connection,
    *,
    kind: str,
    incident_id: int,
    body: dict[str, Any],
    actor: str,
    at: datetime,
) -> None:
    """Append a rescue fact to the compliance log (rule A1), in the caller's transaction."""
    compliance_log.append(
        conn,
        kind=f"rescue.{kind}",
        subject_type=SUBJECT,
        subject_id=incident_id,
        body=body,
        actor=actor,
        at=at,
    )


def log_device_fact(
    conn: psycopg.Connection, *, kind: str, device_id: str, body: dict[str, Any], at: datetime
) -> None:
    """Append a detection fact about an elevator to the compliance log (rule A1)."""
    compliance_log.append(
        conn,
        kind=kind,
        subject_type="device",
        subject_id=device_id,
        body=body,
        actor="detector",
        at=at,
    )


def announce(conn: psycopg.Connection, *, incident: Incident, change: str) -> None:
    """Tell the live console (and other engines) that an incident changed, on commit."""
    payload = {
        "kind": "incident",
        "change": change,
        "id": incident.id,
        "device": incident.device_id,
        "status": incident.status.value,
    }
    conn.execute("SELECT pg_notify(%s, %s)", (notify.ALERTS, json.dumps(payload)))


# -- lift state -----------------------------------------------------------------------------------


def lift_states(
    conn: psycopg.Connection, *, device_ids: Sequence[str] | None = None
) -> list[LiftState]:
    """Detection metrics of elevators (when ``device_ids`` is None: all with passengers or with
    the alarm button held)."""
    if device_ids is None:
        where = (
            "s.device_id IN (SELECT device_id FROM device_state "
            "WHERE (metric IN ('passengers', 'alarm_button') AND value = 1) "
            "   OR (metric = 'fault_code' AND value <> 0))"
        )
        params: dict[str, Any] = {"metrics": list(DETECTION_METRICS)}
    else:
        where = "s.device_id = ANY(%(devices)s)"
        params = {"metrics": list(DETECTION_METRICS), "devices": list(device_ids)}
    query = (
        "SELECT s.device_id, s.metric, s.value, "
        "  (SELECT max(e.ts) FROM events e "
        "   WHERE e.device_id = s.device_id AND e.metric = s.metric) AS changed_at, "
        "  j.rescue_dwell_outside_door_zone_s AS outside_s, j.rescue_dwell_at_floor_s AS floor_s "
        "FROM device_state s JOIN devices d ON d.id = s.device_id AND d.kind = 'elevator' "
        "JOIN sites si ON si.id = d.site_id JOIN jurisdictions j ON j.id = si.jurisdiction_id "
        f"WHERE {where} AND s.metric = ANY(%(metrics)s)"
    )
    values: dict[str, dict[str, float]] = {}
    changed: dict[str, dict[str, datetime]] = {}
    dwells: dict[str, tuple[float, float]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(query, params):
            values.setdefault(row["device_id"], {})[row["metric"]] = row["value"]
            dwells[row["device_id"]] = (float(row["outside_s"]), float(row["floor_s"]))
            changes = changed.setdefault(row["device_id"], {})
            if row["changed_at"] is not None:
                changes[row["metric"]] = row["changed_at"]
    return [LiftState(d, values[d], changed.get(d, {}), *dwells[d]) for d in sorted(values)]


def unanswered_alarm_presses(
    conn: psycopg.Connection, *, since: datetime
) -> list[tuple[str, datetime]]:
    """Elevators whose alarm button was pressed since ``since`` with no incident reported
    after, each with the time of its first such press (rule R2 counts from then)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT e.device_id, min(e.ts) AS pressed_at FROM events e "
            "JOIN devices d ON d.id = e.device_id "
            "WHERE d.kind = 'elevator' AND e.metric = 'alarm_button' AND e.value = 1 "
            "AND e.ts >= %s AND NOT EXISTS (SELECT 1 FROM rescue_incidents i "
            "  WHERE i.device_id = e.device_id AND (i.closed_at IS NULL OR i.reported_at >= e.ts)) "
            "GROUP BY e.device_id ORDER BY e.device_id",
            (since,),
        ).fetchall()
    return [(row["device_id"], row["pressed_at"]) for row in rows]


# -- incidents ------------------------------------------------------------------------------------


def site_facts(conn: psycopg.Connection, *, device_id: str) -> dict[str, Any]:
    """Site, tier, deadlines and contracted firm of an elevator."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT d.id AS device_id, d.kind, d.firm_id, s.id AS site_id, s.tier, s.latitude, "
            "s.longitude, s.timezone, s.user_unit_id, j.id AS jurisdiction_id, "
            "j.rescue_minutes_city, j.rescue_minutes_elsewhere, j.rescue_clock_from, "
            "j.rescue_accept_timeout_s, j.rescue_fire_service_after_s "
            "FROM devices d JOIN sites s ON s.id = d.site_id "
            "JOIN jurisdictions j ON j.id = s.jurisdiction_id WHERE d.id = %s",
            (device_id,),
        ).fetchone()
    if row is None:
        raise IncidentNotFound(f"no device {device_id!r}")
    return row


def insert_incident(
    conn: psycopg.Connection,
    *,
    device_id: str,
    site_id: int,
    firm_id: int | None,
    jurisdiction_id: int,
    trigger: Trigger,
    tier: str,
    deadline_minutes: int,
    clock_from: str,
    reported_at: datetime,
    arrival_deadline: datetime | None,
    follows_incident_id: int | None = None,
) -> Incident | None:
    """Open an incident; None when the elevator already has an open one (rule R1)."""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        return cur.execute(
            "INSERT INTO rescue_incidents (device_id, site_id, firm_id, jurisdiction_id, "
            "trigger, tier, deadline_minutes, clock_from, reported_at, arrival_deadline, "
            "follows_incident_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (device_id) WHERE closed_at IS NULL DO NOTHING "
            f"RETURNING {INCIDENT_COLUMNS}",
            (
                device_id,
                site_id,
                firm_id,
                jurisdiction_id,
                trigger.value,
                tier,
                deadline_minutes,
                clock_from,
                reported_at,
                arrival_deadline,
                follows_incident_id,
            ),
        ).fetchone()


def open_incident_of(
    conn: psycopg.Connection, *, device_id: str, lock: bool = False
) -> Incident | None:
    """The open incident of an elevator, if any."""
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        return cur.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM rescue_incidents "
            f"WHERE device_id = %s AND closed_at IS NULL{suffix}",
            (device_id,),
        ).fetchone()


def get_incident(conn: psycopg.Connection, *, incident_id: int, lock: bool = False) -> Incident:
    """One incident by id."""
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        incident = cur.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM rescue_incidents WHERE id = %s{suffix}",
            (incident_id,),
        ).fetchone()
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return incident


def open_incidents(conn: psycopg.Connection) -> list[Incident]:
    """Every open incident, oldest first."""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        return cur.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM rescue_incidents WHERE closed_at IS NULL ORDER BY id"
        ).fetchall()


def ended_incidents(conn: psycopg.Connection, *, since: datetime) -> list[Incident]:
    """Incidents whose passengers were released (or that closed) since ``since``."""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        return cur.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM rescue_incidents i WHERE i.status IN "
            "('released', 'closed') AND EXISTS (SELECT 1 FROM rescue_steps s "
            "WHERE s.incident_id = i.id AND s.step IN ('released', 'closed') AND s.at >= %s) "
            "ORDER BY i.id",
            (since,),
        ).fetchall()


def update_incident(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    status: Status | None = None,
    arrival_deadline: datetime | None = None,
    alarm_id: int | None = None,
    closed_at: datetime | None = None,
) -> Incident:
    """Move an incident's status and fill in what was not known yet."""
    with conn.cursor(row_factory=class_row(Incident)) as cur:
        incident = cur.execute(
            "UPDATE rescue_incidents SET status = coalesce(%s, status), "
            "arrival_deadline = coalesce(arrival_deadline, %s), "
            "alarm_id = coalesce(alarm_id, %s), closed_at = coalesce(closed_at, %s) "
            f"WHERE id = %s RETURNING {INCIDENT_COLUMNS}",
            (status.value if status else None, arrival_deadline, alarm_id, closed_at, incident_id),
        ).fetchone()
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return incident


def add_step(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    step: Step,
    at: datetime,
    actor: str,
    technician_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> IncidentStep:
    """Append a step (rule R6) and log it (rule A1)."""
    plain = json.loads(canonical_json(detail or {}))  # datetimes as canonical text
    conn.execute(
        "INSERT INTO rescue_steps (incident_id, step, at, actor, technician_id, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (incident_id, step.value, at, actor, technician_id, Jsonb(plain)),
    )
    body = {**plain, "technician_id": technician_id}
    log_fact(conn, kind=step.value, incident_id=incident_id, body=body, actor=actor, at=at)
    return IncidentStep(incident_id, step, at, actor, technician_id, plain)


def steps(conn: psycopg.Connection, *, incident_id: int) -> list[IncidentStep]:
    """An incident's history, in order."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT incident_id, step, at, actor, technician_id, detail FROM rescue_steps "
            "WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()
    return [
        IncidentStep(
            r["incident_id"], Step(r["step"]), r["at"], r["actor"], r["technician_id"], r["detail"]
        )
        for r in rows
    ]


def has_step(conn: psycopg.Connection, *, incident_id: int, step: Step) -> bool:
    """Whether the incident has a step of this kind."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM rescue_steps WHERE incident_id = %s AND step = %s)",
        (incident_id, step.value),
    ).fetchone()
    return bool(first_value(row))


# -- breaches -------------------------------------------------------------------------------------


def record_breach(
    conn: psycopg.Connection, *, incident_id: int, deadline: datetime, detected_at: datetime
) -> bool:
    """Record a missed arrival deadline once (rule R6); True when it is new."""
    row = conn.execute(
        "INSERT INTO rescue_breaches (incident_id, kind, deadline, detected_at) "
        "VALUES (%s, 'arrival_deadline', %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (incident_id, deadline, detected_at),
    ).fetchone()
    if row is None:
        return False
    conn.execute(
        "INSERT INTO rescue_steps (incident_id, step, at, actor, detail) "
        "VALUES (%s, 'breach', %s, 'deadline', %s)",
        (
            incident_id,
            detected_at,
            Jsonb({"kind": "arrival_deadline", "deadline": deadline.isoformat()}),
        ),
    )
    log_fact(
        conn,
        kind="breach",
        incident_id=incident_id,
        body={"kind": "arrival_deadline", "deadline": deadline},
        actor="deadline",
        at=detected_at,
    )
    return True


def breaches(conn: psycopg.Connection, *, incident_id: int) -> list[dict[str, Any]]:
    """Breaches of an incident."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT kind, deadline, detected_at FROM rescue_breaches WHERE incident_id = %s "
            "ORDER BY id",
            (incident_id,),
        ).fetchall()


# -- dispatch -------------------------------------------------------------------------------------


DISPATCH_COLUMNS = columns(Dispatch)


def candidates(
    conn: psycopg.Connection, *, incident: Incident, at: datetime, today: date
) -> list[Candidate]:
    """Qualified (M10), on-call (R3), free (R4) technicians of the contracted firm not yet
    asked."""
    if incident.firm_id is None:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT t.id, t.name, coalesce(l.latitude, t.home_latitude) AS lat, "
            "coalesce(l.longitude, t.home_longitude) AS lon "
            "FROM technicians t JOIN maintenance_firms f ON f.id = t.firm_id "
            "LEFT JOIN technician_locations l ON l.technician_id = t.id "
            "WHERE t.firm_id = %(firm)s AND t.active "
            "AND t.certificate_expires_on >= %(today)s AND f.licence_expires_on >= %(today)s "
            "AND EXISTS (SELECT 1 FROM roster_shifts s WHERE s.technician_id = t.id "
            "            AND s.firm_id = t.firm_id AND s.during @> %(at)s::timestamptz) "
            "AND NOT EXISTS (SELECT 1 FROM rescue_dispatches d "
            "                WHERE d.incident_id = %(incident)s AND d.technician_id = t.id) "
            # rule R4: a technician already on another open rescue (asked and not answered, or
            # accepted and the passengers not yet released) is not free
            "AND NOT EXISTS (SELECT 1 FROM rescue_dispatches d "
            "  JOIN rescue_incidents i ON i.id = d.incident_id "
            "  WHERE d.technician_id = t.id AND i.id <> %(incident)s AND i.closed_at IS NULL "
            "  AND i.status <> 'released' AND (d.outcome IS NULL OR d.outcome = 'accepted')) "
            "AND coalesce(l.latitude, t.home_latitude) IS NOT NULL ORDER BY t.id",
            {"firm": incident.firm_id, "today": today, "at": at, "incident": incident.id},
        ).fetchall()
    return [Candidate(r["id"], r["name"], Place(r["lat"], r["lon"])) for r in rows]


def insert_dispatch(
    conn: psycopg.Connection,
    *,
    incident_id: int,
    technician_id: int,
    rank: int,
    travel_s: float,
    estimated_arrival: datetime,
    dispatched_at: datetime,
    accept_by: datetime,
) -> Dispatch:
    """Ask one technician to go."""
    with conn.cursor(row_factory=class_row(Dispatch)) as cur:
        dispatch = cur.execute(
            "INSERT INTO rescue_dispatches (incident_id, technician_id, rank, estimated_travel_s, "
            "estimated_arrival, dispatched_at, accept_by) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {DISPATCH_COLUMNS}",
            (
                incident_id,
                technician_id,
                rank,
                travel_s,
                estimated_arrival,
                dispatched_at,
                accept_by,
            ),
        ).fetchone()
    assert dispatch is not None
    return dispatch


def dispatches(conn: psycopg.Connection, *, incident_id: int) -> list[Dispatch]:
    """Every dispatch of an incident, in order."""
    with conn.cursor(row_factory=class_row(Dispatch)) as cur:
        return cur.execute(
            f"SELECT {DISPATCH_COLUMNS} FROM rescue_dispatches WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()


def awaiting_answer(conn: psycopg.Connection, *, incident_id: int) -> Dispatch | None:
    """The dispatch of an incident still waiting for an answer."""
    with conn.cursor(row_factory=class_row(Dispatch)) as cur:
        return cur.execute(
            f"SELECT {DISPATCH_COLUMNS} FROM rescue_dispatches "
            "WHERE incident_id = %s AND outcome IS NULL FOR UPDATE",
            (incident_id,),
        ).fetchone()


def answer_dispatch(
    conn: psycopg.Connection, *, dispatch_id: int, outcome: str, at: datetime
) -> Dispatch | None:
    """Record the answer to a dispatch once; None when it was already answered."""
    with conn.cursor(row_factory=class_row(Dispatch)) as cur:
        return cur.execute(
            "UPDATE rescue_dispatches SET outcome = %s, outcome_at = %s "
            f"WHERE id = %s AND outcome IS NULL RETURNING {DISPATCH_COLUMNS}",
            (outcome, at, dispatch_id),
        ).fetchone()


def accepted_dispatch(conn: psycopg.Connection, *, incident_id: int) -> Dispatch | None:
    """The accepted dispatch of an incident, if any."""
    with conn.cursor(row_factory=class_row(Dispatch)) as cur:
        return cur.execute(
            f"SELECT {DISPATCH_COLUMNS} FROM rescue_dispatches "
            "WHERE incident_id = %s AND outcome = 'accepted'",
            (incident_id,),
        ).fetchone()


def technician_exists(conn: psycopg.Connection, *, technician_id: int) -> bool:
    """Whether a technician with this id is registered."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM technicians WHERE id = %s)", (technician_id,)
    ).fetchone()
    return bool(first_value(row))


def save_location(
    conn: psycopg.Connection, *, technician_id: int, place: Place, at: datetime
) -> None:
    """Remember where a technician last checked in."""
    conn.execute(
        "INSERT INTO technician_locations (technician_id, latitude, longitude, reported_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (technician_id) DO UPDATE SET "
        "latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, "
        "reported_at = EXCLUDED.reported_at WHERE technician_locations.reported_at <= "
        "EXCLUDED.reported_at",
        (technician_id, place.latitude, place.longitude, at),
    )


# -- KPIs (R7) and coverage (R8) ------------------------------------------------------------------


def kpis(conn: psycopg.Connection, *, firm_id: int | None = None) -> list[dict[str, Any]]:
    """Rule R7: monthly KPIs per firm and jurisdiction."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM rescue_kpis_monthly WHERE %(firm)s::bigint IS NULL "
            "OR firm_id = %(firm)s ORDER BY month, firm_id, jurisdiction_id",
            {"firm": firm_id},
        ).fetchall()


def contracted_elevators(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Elevators in service with a contracted firm, their site and deadline values."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT d.id AS device_id, d.firm_id, s.tier, s.latitude, s.longitude, "
            "CASE WHEN s.tier = 'city' THEN j.rescue_minutes_city "
            "     ELSE j.rescue_minutes_elsewhere END AS deadline_minutes "
            "FROM devices d JOIN sites s ON s.id = d.site_id "
            "JOIN jurisdictions j ON j.id = s.jurisdiction_id "
            "WHERE d.kind = 'elevator' AND d.firm_id IS NOT NULL AND d.decommissioned_at IS NULL "
            "ORDER BY d.id"
        ).fetchall()


def add_service_point(conn: psycopg.Connection, *, firm_id: int, name: str, place: Place) -> None:
    """Record (or move) a firm's depot, where its technicians start from (rule R8)."""
    conn.execute(
        "INSERT INTO service_points (firm_id, name, latitude, longitude) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (firm_id, name) DO UPDATE SET latitude = EXCLUDED.latitude,"
        " longitude = EXCLUDED.longitude",
        (firm_id, name, place.latitude, place.longitude),
    )


def service_points(conn: psycopg.Connection) -> dict[int, list[tuple[str, Place]]]:
    """Each firm's service points (technicians' homes count when a firm has none)."""
    points: dict[int, list[tuple[str, Place]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute("SELECT firm_id, name, latitude, longitude FROM service_points"):
            points.setdefault(row["firm_id"], []).append(
                (row["name"], Place(row["latitude"], row["longitude"]))
            )
        for row in cur.execute(
            "SELECT firm_id, name, home_latitude, home_longitude FROM technicians "
            "WHERE active AND home_latitude IS NOT NULL"
        ):
            if row["firm_id"] not in points or all(
                not n.startswith("service point") for n, _ in points[row["firm_id"]]
            ):
                points.setdefault(row["firm_id"], []).append(
                    (f"home of {row['name']}", Place(row["home_latitude"], row["home_longitude"]))
                )
    return points


def firm_loads(conn: psycopg.Connection, *, today: date) -> list[FirmLoad]:
    """Rule R8: contracted elevators and qualified technicians per firm."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT f.id AS firm_id, "
            "(SELECT count(*) FROM devices d WHERE d.firm_id = f.id AND d.kind = 'elevator' "
            " AND d.decommissioned_at IS NULL) AS elevators, "
            "(SELECT count(*) FROM technicians t WHERE t.firm_id = f.id AND t.active "
            " AND t.certificate_expires_on >= %s) AS technicians "
            "FROM maintenance_firms f ORDER BY f.id",
            (today,),
        ).fetchall()
    return [FirmLoad(r["firm_id"], r["elevators"], r["technicians"]) for r in rows]


def coverage_rows(
    *, elevators: list[dict[str, Any]], nearest: dict[str, tuple[str | None, float | None]]
) -> list[CoverageRow]:
    """Combine elevators with their nearest service point's travel time."""
    rows = []
    for e in elevators:
        name, minutes = nearest.get(e["device_id"], (None, None))
        rows.append(
            CoverageRow(
                device_id=e["device_id"],
                firm_id=e["firm_id"],
                tier=e["tier"],
                deadline_minutes=e["deadline_minutes"],
                nearest_point=name,
                travel_minutes=minutes,
                within_deadline=minutes is not None and minutes <= e["deadline_minutes"],
            )
        )
    return rows


def time_out_dispatch(
    conn: psycopg.Connection, *, dispatch_id: int, now: datetime
) -> dict[str, Any] | None:
    """Mark an unanswered dispatch timed out once its accept window has passed (rule R4); its
    incident, technician and window, or None when it was answered (or handled) already."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "UPDATE rescue_dispatches SET outcome = 'timed_out', outcome_at = %(now)s "
            "WHERE id = %(id)s AND outcome IS NULL AND accept_by <= %(now)s "
            "RETURNING incident_id, technician_id, accept_by",
            {"id": dispatch_id, "now": now},
        ).fetchone()


# -- scoped reads for the incidents API (rule A2) ------------------------------------------

_INCIDENT_SELECT = sql.SQL(
    """SELECT i.id, i.device_id, i.site_id, s.name AS site_name, i.firm_id, i.trigger, i.tier,
              i.deadline_minutes, i.clock_from, i.reported_at, i.arrival_deadline, i.status,
              i.alarm_id, i.closed_at,
              EXISTS (SELECT 1 FROM rescue_breaches b WHERE b.incident_id = i.id) AS breached,
              w.technician_id, t.name AS technician_name,
              CASE WHEN w.outcome IS NULL THEN w.accept_by END AS accept_by,
              (SELECT min(st.at) FROM rescue_steps st
                WHERE st.incident_id = i.id AND st.step = 'arrived') AS arrived_at,
              (SELECT coalesce((st.detail ->> 'proven')::boolean, true) FROM rescue_steps st
                WHERE st.incident_id = i.id AND st.step = 'arrived') AS arrival_proven,
              i.follows_incident_id
       FROM rescue_incidents i
       JOIN devices d ON d.id = i.device_id
       JOIN sites s ON s.id = i.site_id
       LEFT JOIN LATERAL (SELECT x.technician_id, x.accept_by, x.outcome
                          FROM rescue_dispatches x
                          WHERE x.incident_id = i.id AND (x.outcome IS NULL
                                                          OR x.outcome = 'accepted')
                          ORDER BY x.id DESC LIMIT 1) w ON true
       LEFT JOIN technicians t ON t.id = w.technician_id"""
)


async def list_scoped_incidents(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    open_only: bool,
    device_id: str | None,
    limit: int,
) -> list[IncidentOut]:
    """Incidents of devices in ``scope`` (rule A2): open ones by deadline, else newest first."""
    params: dict[str, Any] = {**scope_params, "limit": limit}
    where = [sql.SQL("({})").format(scope)]
    if open_only:
        where.append(sql.SQL("i.closed_at IS NULL"))
    if device_id is not None:
        where.append(sql.SQL("i.device_id = %(device)s"))
        params["device"] = device_id
    order = (
        sql.SQL("i.arrival_deadline NULLS LAST, i.id")
        if open_only
        else sql.SQL("i.reported_at DESC, i.id DESC")
    )
    query = sql.SQL("{} WHERE {} ORDER BY {} LIMIT %(limit)s").format(
        _INCIDENT_SELECT, sql.SQL(" AND ").join(where), order
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [IncidentOut.model_validate(row) for row in await cur.fetchall()]


async def on_call_positions(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    at: datetime,
) -> list[TechnicianPosition]:
    """On-call technicians (rule R3) of the firms maintaining devices in ``scope``, with their
    last known position (their home base until they report one)."""
    query = sql.SQL(
        """SELECT t.id AS technician_id, t.name,
                  coalesce(l.latitude, t.home_latitude) AS latitude,
                  coalesce(l.longitude, t.home_longitude) AS longitude, l.reported_at
           FROM technicians t LEFT JOIN technician_locations l ON l.technician_id = t.id
           WHERE t.active AND coalesce(l.latitude, t.home_latitude) IS NOT NULL
             AND t.firm_id IN (SELECT d.firm_id FROM devices d WHERE {})
             AND EXISTS (SELECT 1 FROM roster_shifts s WHERE s.technician_id = t.id
                         AND s.firm_id = t.firm_id AND s.during @> %(at)s::timestamptz)
           ORDER BY t.name, t.id"""
    ).format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "at": at})
        return [TechnicianPosition.model_validate(row) for row in await cur.fetchall()]


async def get_scoped_incident(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    incident_id: int,
) -> IncidentOut | None:
    """One incident, or None when missing or outside ``scope``."""
    query = sql.SQL("{} WHERE ({}) AND i.id = %(id)s").format(_INCIDENT_SELECT, scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "id": incident_id})
        row = await cur.fetchone()
    return IncidentOut.model_validate(row) if row else None


async def incident_steps(conn: psycopg.AsyncConnection, *, incident_id: int) -> list[StepOut]:
    """The steps of an incident in order (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT step, at, actor, technician_id, detail FROM rescue_steps
               WHERE incident_id = %s ORDER BY id""",
            (incident_id,),
        )
        return [StepOut.model_validate(row) for row in await cur.fetchall()]


async def incident_dispatches(
    conn: psycopg.AsyncConnection, *, incident_id: int
) -> list[DispatchOut]:
    """Every technician asked, in order (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT x.technician_id, t.name AS technician_name, x.rank, x.estimated_travel_s,
                      x.estimated_arrival, x.dispatched_at, x.accept_by, x.outcome, x.outcome_at
               FROM rescue_dispatches x JOIN technicians t ON t.id = x.technician_id
               WHERE x.incident_id = %s ORDER BY x.id""",
            (incident_id,),
        )
        return [DispatchOut.model_validate(row) for row in await cur.fetchall()]


# -- figures for the metrics endpoint --------------------------------------------------------------


def open_incident_counts(conn: psycopg.Connection) -> list[tuple[dict[str, str], float]]:
    """Open rescue incidents by status (people may still be trapped in each)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT status, count(*) FROM rescue_incidents WHERE closed_at IS NULL GROUP BY status"
        ).fetchall()
    return [({"status": status}, float(count)) for status, count in rows]


def breach_counts(conn: psycopg.Connection) -> list[tuple[dict[str, str], float]]:
    """Rescue deadlines missed, ever, by kind (rule R2)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute("SELECT kind, count(*) FROM rescue_breaches GROUP BY kind").fetchall()
    return [({"kind": f"rescue.{kind}"}, float(count)) for kind, count in rows]
