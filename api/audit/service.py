"""Scoped reads of the compliance log (rule A1) for the audit API.

The log itself is written only by the compliance domain (``compliance.log.append``); here it is
only read. An entry belongs to the asset it is about: its subject when the subject is a device,
the ``device_id`` (or ``device``) of its body, or the device of the record, alarm or incident it
is about. A regulator reads the entries of assets in its jurisdiction (rule A2); entries about no
asset are the platform's and only an admin reads them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.audit.models import LogEntry
from api.auth.models import Principal, Role
from api.scope import device_scope

# subject types whose rows carry a device_id column (checked at query time: domains land apart)
SUBJECT_TABLES: dict[str, str] = {
    "maintenance_record": "maintenance_records",
    "rescue_incident": "rescue_incidents",
    "alarm": "alarms",
}


async def subject_tables(conn: psycopg.AsyncConnection) -> dict[str, str]:
    """Those of SUBJECT_TABLES that exist in this database and have a device_id column."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT table_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND column_name = 'device_id'
                 AND table_name = ANY(%s)""",
            (list(SUBJECT_TABLES.values()),),
        )
        present = {row["table_name"] for row in await cur.fetchall()}
    return {subject: table for subject, table in SUBJECT_TABLES.items() if table in present}


def entry_device(tables: dict[str, str]) -> sql.Composable:
    """SQL expression: the device an entry of ``compliance_log l`` is about, or NULL."""
    parts: list[sql.Composable] = [
        sql.SQL("CASE WHEN l.subject_type = 'device' THEN l.subject_id END"),
        sql.SQL("l.body::jsonb ->> 'device_id'"),
        sql.SQL("l.body::jsonb ->> 'device'"),
    ]
    for subject, table in tables.items():
        parts.append(
            sql.SQL(
                "CASE WHEN l.subject_type = {s} THEN (SELECT x.device_id FROM {t} x"
                " WHERE x.id::text = l.subject_id) END"
            ).format(s=sql.Literal(subject), t=sql.Identifier(table))
        )
    return sql.SQL("COALESCE({})").format(sql.SQL(", ").join(parts))


def _filters(
    *,
    principal: Principal,
    device: sql.Composable,
    kind: str | None,
    subject_type: str | None,
    subject_id: str | None,
    device_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[sql.Composable, dict[str, Any]]:
    scope = device_scope(principal)
    where: list[sql.Composable] = [sql.SQL("l.seq > %(after)s")]
    params: dict[str, Any] = dict(scope.params)
    if principal.role is not Role.ADMIN:
        # rule A2: only entries about assets in scope
        where.append(
            sql.SQL("EXISTS (SELECT 1 FROM devices d WHERE d.id = {dev} AND ({scope}))").format(
                dev=device, scope=scope.condition
            )
        )
    for column, value in (
        ("kind", kind),
        ("subject_type", subject_type),
        ("subject_id", subject_id),
    ):
        if value is not None:
            where.append(sql.SQL("l.{} = %({})s").format(sql.Identifier(column), sql.SQL(column)))
            params[column] = value
    if device_id is not None:
        where.append(sql.SQL("{} = %(device_id)s").format(device))
        params["device_id"] = device_id
    if since is not None:
        where.append(sql.SQL("l.at >= %(since)s"))
        params["since"] = since
    if until is not None:
        where.append(sql.SQL("l.at < %(until)s"))
        params["until"] = until
    return sql.SQL(" AND ").join(where), params


def _entry(row: dict[str, Any]) -> LogEntry:
    return LogEntry(**{**row, "body": json.loads(row["body"])})


async def list_entries(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    after_seq: int,
    limit: int,
    kind: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[LogEntry]:
    """Entries in the caller's scope, in chain order, after ``after_seq``."""
    device = entry_device(await subject_tables(conn))
    where, params = _filters(
        principal=principal,
        device=device,
        kind=kind,
        subject_type=subject_type,
        subject_id=subject_id,
        device_id=device_id,
        since=since,
        until=until,
    )
    query = sql.SQL(
        """SELECT l.seq, l.kind, l.subject_type, l.subject_id, {dev} AS device_id, l.body,
                  l.actor, l.at, l.prev_hash, l.hash
           FROM compliance_log l WHERE {where} ORDER BY l.seq LIMIT %(limit)s"""
    ).format(dev=device, where=where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, "after": after_seq, "limit": limit})
        return [_entry(row) for row in await cur.fetchall()]


async def stream_entries(
    conn: psycopg.AsyncConnection,
    *,
    principal: Principal,
    kind: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = 2000,
) -> AsyncIterator[dict[str, Any]]:
    """Every entry in scope, in chain order, through a server-side cursor (body as stored)."""
    device = entry_device(await subject_tables(conn))
    where, params = _filters(
        principal=principal,
        device=device,
        kind=kind,
        subject_type=None,
        subject_id=None,
        device_id=device_id,
        since=since,
        until=until,
    )
    query = sql.SQL(
        """SELECT l.seq, l.at, l.kind, l.subject_type, l.subject_id, {dev} AS device_id,
                  l.actor, l.body, l.prev_hash, l.hash
           FROM compliance_log l WHERE {where} ORDER BY l.seq"""
    ).format(dev=device, where=where)
    async with conn.transaction():
        async with conn.cursor("audit_export", row_factory=dict_row) as cur:
            cur.itersize = batch
            await cur.execute(query, {**params, "after": 0})
            async for row in cur:
                yield row
