"""Scoped reads of maintenance state; every write goes through ``compliance.maintenance.flows``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.auth.models import Principal
from api.maintenance.models import DueItem, RecordOut, VerdictOut
from api.scope import device_scope

DUE_STATES = (
    "due_soon",
    "overdue",
    "lockout_pending",
    "lockout_recommended",
    "locked_out",
    "overridden",
)

_RECORD_SELECT = sql.SQL(
    """SELECT r.id, r.device_id, r.technician_id, t.name AS technician_name, r.firm_id, r.tier,
              r.claimed_start, r.claimed_end, r.checklist_done, r.checklist_total,
              r.credited_tier, r.parts, r.notes, r.corrects_id, r.correction_reason,
              (SELECT c.id FROM maintenance_records c WHERE c.corrects_id = r.id)
                  AS corrected_by_id,
              r.recorded_by, r.recorded_at, v.verdict, v.decided_at AS verdict_at,
              so.signed_by AS signed_off_by, so.signed_at AS signed_off_at
       FROM maintenance_records r
       JOIN devices d ON d.id = r.device_id
       JOIN technicians t ON t.id = r.technician_id
       LEFT JOIN LATERAL (SELECT verdict, decided_at FROM maintenance_verdicts mv
                          WHERE mv.record_id = r.id ORDER BY mv.id DESC LIMIT 1) v ON true
       LEFT JOIN maintenance_signoffs so ON so.record_id = r.id"""
)


async def list_due(
    conn: psycopg.AsyncConnection, *, principal: Principal, states: Sequence[str], limit: int
) -> list[DueItem]:
    """Elevators in scope whose escalation is in ``states``, most overdue first (M1, M5, M6)."""
    scope = device_scope(principal)
    query = sql.SQL(
        """SELECT e.device_id, d.site_id, s.name AS site_name, d.firm_id, f.name AS firm_name,
                  e.state, e.since, e.overdue_since, e.alarm_at, e.lockout_command_id,
                  coalesce(e.detail -> 'overdue_tiers', '[]'::jsonb) AS overdue_tiers
           FROM maintenance_escalations e
           JOIN devices d ON d.id = e.device_id
           JOIN sites s ON s.id = d.site_id
           LEFT JOIN maintenance_firms f ON f.id = d.firm_id
           WHERE ({}) AND e.state = ANY(%(states)s)
           ORDER BY e.overdue_since NULLS LAST, e.device_id LIMIT %(limit)s"""
    ).format(scope.condition)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "states": list(states), "limit": limit})
        return [DueItem.model_validate(row) for row in await cur.fetchall()]


async def list_records(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    device_id: str | None,
    verdict: str | None,
    limit: int,
) -> list[RecordOut]:
    """Records of elevators in scope, newest visit first."""
    scope = device_scope(principal)
    params: dict[str, Any] = {**scope.params, "limit": limit}
    where = [sql.SQL("({})").format(scope.condition)]
    if device_id is not None:
        where.append(sql.SQL("r.device_id = %(device)s"))
        params["device"] = device_id
    if verdict is not None:
        where.append(sql.SQL("v.verdict = %(verdict)s"))
        params["verdict"] = verdict
    query = sql.SQL("{} WHERE {} ORDER BY r.claimed_start DESC, r.id DESC LIMIT %(limit)s").format(
        _RECORD_SELECT, sql.SQL(" AND ").join(where)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [RecordOut.model_validate(row) for row in await cur.fetchall()]


async def get_record(
    conn: psycopg.AsyncConnection, *, principal: Principal, record_id: int
) -> RecordOut | None:
    """One record, or None when missing or outside the caller's scope."""
    scope = device_scope(principal)
    query = sql.SQL("{} WHERE ({}) AND r.id = %(id)s").format(_RECORD_SELECT, scope.condition)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "id": record_id})
        row = await cur.fetchone()
    return RecordOut.model_validate(row) if row else None


async def verdicts(conn: psycopg.AsyncConnection, *, record_id: int) -> list[VerdictOut]:
    """Every verdict of a record, oldest first (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, verdict, lower(onsite) AS onsite_start, upper(onsite) AS onsite_end,
                      onsite_minutes, evidence, rule_values, decided_at
               FROM maintenance_verdicts WHERE record_id = %s ORDER BY id""",
            (record_id,),
        )
        return [VerdictOut.model_validate(row) for row in await cur.fetchall()]


async def escalation_state(conn: psycopg.AsyncConnection, *, device_id: str) -> str | None:
    """The escalation state of one elevator (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT state FROM maintenance_escalations WHERE device_id = %s", (device_id,)
        )
        row = await cur.fetchone()
    return row["state"] if row else None
