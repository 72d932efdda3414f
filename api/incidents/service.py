"""Scoped reads of rescue incidents; every change goes through ``compliance.rescue.flows``."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.auth.models import Principal
from api.incidents.models import DispatchOut, IncidentOut, StepOut
from api.scope import device_scope

_SELECT = sql.SQL(
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


async def list_incidents(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    open_only: bool,
    device_id: str | None,
    limit: int,
) -> list[IncidentOut]:
    """Incidents of assets in scope (rule A2): open ones by deadline, else newest first."""
    scope = device_scope(principal)
    params: dict[str, Any] = {**scope.params, "limit": limit}
    where = [sql.SQL("({})").format(scope.condition)]
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
        _SELECT, sql.SQL(" AND ").join(where), order
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [IncidentOut.model_validate(row) for row in await cur.fetchall()]


async def get_incident(
    conn: psycopg.AsyncConnection, *, principal: Principal, incident_id: int
) -> IncidentOut | None:
    """One incident, or None when missing or outside the caller's scope."""
    scope = device_scope(principal)
    query = sql.SQL("{} WHERE ({}) AND i.id = %(id)s").format(_SELECT, scope.condition)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "id": incident_id})
        row = await cur.fetchone()
    return IncidentOut.model_validate(row) if row else None


async def steps(conn: psycopg.AsyncConnection, *, incident_id: int) -> list[StepOut]:
    """The steps of an incident in order (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT step, at, actor, technician_id, detail FROM rescue_steps
               WHERE incident_id = %s ORDER BY id""",
            (incident_id,),
        )
        return [StepOut.model_validate(row) for row in await cur.fetchall()]


async def dispatches(conn: psycopg.AsyncConnection, *, incident_id: int) -> list[DispatchOut]:
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
