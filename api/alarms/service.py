"""Scoped reads of alarms; changes go through the alerts domain's own functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.alarms.models import AlarmChangeOut, AlarmOut
from api.auth.models import Principal
from api.scope import alarm_scope

_COLUMNS = sql.SQL(
    """a.id, a.source_type, a.source_id,
       CASE WHEN a.source_type = 'device' THEN a.source_id END AS device_id,
       a.type, a.severity, a.message, a.state, a.details, a.raised_at, a.last_triggered_at,
       a.trigger_count, a.acknowledged_at, a.acknowledged_by, a.cleared_at, a.cleared_by"""
)


async def list_alarms(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    states: Sequence[str],
    device_id: str | None = None,
    type: str | None = None,
    limit: int = 200,
) -> list[AlarmOut]:
    """Alarms in the caller's scope (rule A2), newest first."""
    scope = alarm_scope(principal)
    params: dict[str, Any] = {**scope.params, "states": list(states), "limit": limit}
    where = [sql.SQL("({})").format(scope.condition), sql.SQL("a.state = ANY(%(states)s)")]
    if device_id is not None:
        where.append(sql.SQL("a.source_type = 'device' AND a.source_id = %(device)s"))
        params["device"] = device_id
    if type is not None:
        where.append(sql.SQL("a.type = %(type)s"))
        params["type"] = type
    query = sql.SQL(
        "SELECT {} FROM alarms a WHERE {} ORDER BY a.last_triggered_at DESC, a.id DESC"
        " LIMIT %(limit)s"
    ).format(_COLUMNS, sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [AlarmOut.model_validate(row) for row in await cur.fetchall()]


async def get_alarm(
    conn: psycopg.AsyncConnection, *, principal: Principal, alarm_id: int
) -> AlarmOut | None:
    """One alarm, or None when missing or outside the caller's scope."""
    scope = alarm_scope(principal)
    query = sql.SQL("SELECT {} FROM alarms a WHERE a.id = %(id)s AND ({})").format(
        _COLUMNS, scope.condition
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "id": alarm_id})
        row = await cur.fetchone()
    return AlarmOut.model_validate(row) if row else None


async def visible_alarm_ids(
    conn: psycopg.AsyncConnection, *, principal: Principal, alarm_ids: Sequence[int]
) -> set[int]:
    """Those of ``alarm_ids`` the caller may see."""
    scope = alarm_scope(principal)
    query = sql.SQL("SELECT a.id FROM alarms a WHERE a.id = ANY(%(ids)s) AND ({})").format(
        scope.condition
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params, "ids": list(alarm_ids)})
        return {row["id"] for row in await cur.fetchall()}


async def alarm_history(conn: psycopg.AsyncConnection, *, alarm_id: int) -> list[AlarmChangeOut]:
    """The changes of one alarm, oldest first (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT change, at, actor, detail FROM alarm_changes WHERE alarm_id = %s ORDER BY id",
            (alarm_id,),
        )
        return [AlarmChangeOut.model_validate(row) for row in await cur.fetchall()]
