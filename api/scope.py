"""Rule A2 scoping: the one place that turns a principal into a SQL condition over devices.

Every query the API runs over assets, or over anything that belongs to an asset (state,
telemetry, events, alarms, incidents, maintenance records), filters through ``device_scope``.
A row outside the caller's scope is simply not found, so the API answers 404, never 403: a 403
would tell the caller that the thing exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import HTTPException, status
from psycopg import sql

from api.auth.models import Principal, Role


@dataclass(frozen=True, slots=True)
class Scope:
    """A SQL condition over a ``devices`` alias and the named parameters it needs."""

    condition: sql.Composable
    params: dict[str, Any]
    key: tuple[str, int | None]  # principals with equal keys see exactly the same devices


def device_scope(principal: Principal, *, alias: str = "d") -> Scope:
    """The devices ``principal`` may see, as a condition on ``<alias>.*`` columns (rule A2)."""
    d = sql.Identifier(alias)
    role = principal.role
    if role is Role.ADMIN:
        return Scope(sql.SQL("TRUE"), {}, ("all", None))
    if role is Role.REGULATOR:
        # rule A2: regulators read everything in their jurisdiction
        return Scope(
            sql.SQL(
                "{d}.site_id IN (SELECT id FROM sites WHERE jurisdiction_id = %(scope_id)s)"
            ).format(d=d),
            {"scope_id": principal.jurisdiction_id},
            ("jurisdiction", principal.jurisdiction_id),
        )
    if role in (Role.FIRM_MANAGER, Role.DISPATCHER):
        # rule A2: firms see the assets they hold the contract for
        return Scope(
            sql.SQL("{d}.firm_id = %(scope_id)s").format(d=d),
            {"scope_id": principal.firm_id},
            ("firm", principal.firm_id),
        )
    if role is Role.TECHNICIAN:
        # rule A2: technicians see their firm's assets they are assigned to (003:L1141)
        return Scope(
            sql.SQL(
                "{d}.firm_id = %(scope_firm)s AND {d}.id IN (SELECT device_id FROM"
                " technician_assignments WHERE technician_id = %(scope_id)s)"
            ).format(d=d),
            {"scope_id": principal.technician_id, "scope_firm": principal.firm_id},
            ("technician", principal.technician_id),
        )
    if role is Role.SAFETY_MANAGER:
        # rule A2: user units see their own sites
        return Scope(
            sql.SQL(
                "{d}.site_id IN (SELECT id FROM sites WHERE user_unit_id = %(scope_id)s)"
            ).format(d=d),
            {"scope_id": principal.user_unit_id},
            ("user_unit", principal.user_unit_id),
        )
    if role is Role.MANUFACTURER:
        # rule M7: manufacturers see the lifts they built
        return Scope(
            sql.SQL("{d}.manufacturer_id = %(scope_id)s").format(d=d),
            {"scope_id": principal.manufacturer_id},
            ("manufacturer", principal.manufacturer_id),
        )
    return Scope(sql.SQL("FALSE"), {}, ("none", None))  # unknown roles see nothing


def alarm_scope(principal: Principal, *, alias: str = "a") -> Scope:
    """The alarms ``principal`` may see, as a condition on an ``alarms`` alias (rule A2).

    An alarm is seen through its source: a device in the caller's device scope, a site where
    the caller sees a device, or (for the firm's managers and dispatchers) the firm itself or
    one of its technicians. Anything else is the platform's: admins only.
    """
    devices = device_scope(principal)
    a = sql.Identifier(alias)
    if principal.role is Role.ADMIN:
        return Scope(sql.SQL("TRUE"), {}, devices.key)
    parts = [
        sql.SQL(
            "({a}.source_type = 'device' AND EXISTS (SELECT 1 FROM devices d"
            " WHERE d.id = {a}.source_id AND ({scope})))"
        ).format(a=a, scope=devices.condition),
        sql.SQL(
            "({a}.source_type = 'site' AND EXISTS (SELECT 1 FROM devices d"
            " WHERE d.site_id::text = {a}.source_id AND ({scope})))"
        ).format(a=a, scope=devices.condition),
    ]
    params = dict(devices.params)
    if principal.role in (Role.FIRM_MANAGER, Role.DISPATCHER):
        parts.append(
            sql.SQL(
                "({a}.source_type = 'firm' AND {a}.source_id = %(scope_firm_text)s)"
                " OR ({a}.source_type = 'technician' AND EXISTS (SELECT 1 FROM technicians t"
                " WHERE t.id::text = {a}.source_id AND t.firm_id = %(scope_id)s))"
            ).format(a=a)
        )
        params["scope_firm_text"] = str(principal.firm_id)
    return Scope(sql.SQL(" OR ").join(parts), params, devices.key)


def scoped_device_ids_query(scope: Scope) -> sql.Composed:
    """``SELECT d.id FROM devices d WHERE <scope> AND d.id = ANY(%(ids)s)``."""
    return sql.SQL("SELECT d.id FROM devices d WHERE ({}) AND d.id = ANY(%(ids)s)").format(
        scope.condition
    )


def device_scope_args(principal: Principal) -> dict[str, Any]:
    """The caller's devices as the keyword arguments of the domains' scoped reads."""
    scope = device_scope(principal)
    return {"scope": scope.condition, "scope_params": scope.params}


def alarm_scope_args(principal: Principal) -> dict[str, Any]:
    """The caller's alarms as the keyword arguments of the domains' scoped reads."""
    scope = alarm_scope(principal)
    return {"scope": scope.condition, "scope_params": scope.params}


async def device_visible(
    conn: psycopg.AsyncConnection, *, principal: Principal, device_id: str
) -> bool:
    """True when the caller may see ``device_id`` (rule A2)."""
    scope = device_scope(principal)
    cursor = await conn.execute(
        scoped_device_ids_query(scope), {**scope.params, "ids": [device_id]}
    )
    return await cursor.fetchone() is not None


async def acting_technician(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    technician_id: int | None,
    *,
    required: bool = True,
) -> int | None:
    """Who did the work being recorded: a technician caller itself, or a technician of the
    caller's firm (any, for an admin); 404 for another firm's (rule A2), 400 if missing."""
    if principal.role is Role.TECHNICIAN:
        if technician_id not in (None, principal.technician_id):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, detail="a technician records its own work"
            )
        return principal.technician_id
    if technician_id is None:
        if required:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="technician_id is required")
        return None
    cur = await conn.execute("SELECT firm_id FROM technicians WHERE id = %s", (technician_id,))
    row = await cur.fetchone()
    firm = None if row is None else row["firm_id"] if isinstance(row, dict) else row[0]
    if row is None or (principal.role is not Role.ADMIN and firm != principal.firm_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="technician not found")
    return technician_id
