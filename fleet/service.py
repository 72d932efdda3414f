"""All of the registry's SQL: write (create, update, upsert), retire, get, list, scopes, the
firm in force, gateway devices and MQTT credentials.

Every statement is built from ``fleet.models.KINDS``: a kind's fields, natural key and
references. Writes take records that name references by natural key; they are resolved here, in
one query per referenced kind, and a name that is not in the registry is a ``Problem`` naming
the record's row and column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from fleet.models import (
    KINDS,
    POLICY_FIELDS,
    Condition,
    Event,
    FleetError,
    FleetRecord,
    Kind,
    NotFound,
    Problem,
    Status,
    TelemetryBucket,
    Viewer,
    WriteResult,
)
from vigil.catalog import DeviceKind, FaultCode, LockoutState, ServiceMode

Key = tuple[Any, ...]

# Natural-key column of each single-key kind (what a reference names).
_KEY_COLUMN = {
    "jurisdictions": "code",
    "user_units": "name",
    "sites": "code",
    "safety_managers": "certificate_no",
    "firms": "name",
    "technicians": "certificate_no",
    "manufacturers": "name",
    "gateways": "id",
    "devices": "id",
}
# Kinds whose rows have a numeric id of their own.
_NUMERIC_ID = {
    "jurisdictions",
    "user_units",
    "sites",
    "safety_managers",
    "firms",
    "technicians",
    "manufacturers",
    "contracts",
}


# -- statements ----------------------------------------------------------------------------------


def _values(kind: Kind) -> list[tuple[str, str, str]]:
    """(column, value on insert, value on update) of each stored column of ``kind``."""
    out: list[tuple[str, str, str]] = []
    for name in kind.stored:
        column = kind.column(name)
        if kind.name == "contracts" and name == "starts_on":
            out.append(("period", "daterange(%(starts_on)s, %(ends_on)s + 1)", "EXCLUDED.period"))
            out.append(
                (
                    "user_unit_id",
                    "(SELECT s.user_unit_id FROM devices d JOIN sites s ON s.id = d.site_id"
                    " WHERE d.id = %(device)s::text)",
                    "EXCLUDED.user_unit_id",
                )
            )
        elif kind.name == "contracts" and name == "ends_on":
            continue
        elif kind.name == "contracts" and name == "device":
            out.append((column, "%(device)s::text", f"EXCLUDED.{column}"))  # typed as below
        elif kind.name == "devices" and name == "registered_at":
            # absent: now on registration, unchanged on update (rule M1's clock starts here)
            out.append(
                (
                    column,
                    "coalesce(%(registered_at)s::timestamptz, %(_at)s)",
                    "coalesce(%(registered_at)s::timestamptz, t.registered_at)",
                )
            )
        else:
            out.append((column, f"%({name})s", f"EXCLUDED.{column}"))
    return out


def _conflict_target(kind: Kind) -> str:
    if kind.name == "contracts":
        return "(device_id, lower(period))"
    return (
        "("
        + ", ".join(
            kind.column(f) if f in kind.refs else _KEY_COLUMN.get(kind.name, f) for f in kind.key
        )
        + ")"
    )


def _write_sql(kind: Kind, *, create_only: bool) -> str:
    values = _values(kind)
    columns = ", ".join(c for c, _, _ in values)
    inserted = ", ".join(v for _, v, _ in values)
    # every kind has an id of its own but the pure link tables (components, assignments)
    returning = "NULL" if kind.name in ("components", "assignments") else "t.id"
    head = f"INSERT INTO {kind.table} AS t ({columns}) VALUES ({inserted})"
    if create_only:
        # the key's conflict only: any other (an overlapping contract) is an error
        return (
            f"{head} ON CONFLICT {_conflict_target(kind)} DO NOTHING"
            f" RETURNING {returning} AS id, true AS created"
        )
    changed = [(c, u) for c, _, u in values]
    sets = ", ".join(f"{c} = {u}" for c, u in changed)
    old = ", ".join(f"t.{c}" for c, _ in changed)
    new = ", ".join(u for _, u in changed)
    return (
        f"{head} ON CONFLICT {_conflict_target(kind)} DO UPDATE SET {sets}"
        f" WHERE ROW({old}) IS DISTINCT FROM ROW({new})"
        f" RETURNING {returning} AS id, (t.xmax = 0) AS created"
    )


def _read_columns(kind: Kind) -> list[str]:
    """``<expression> AS <field>`` of each field, over alias ``t``."""
    out: list[str] = []
    for name in kind.fields:
        ref = kind.refs.get(name)
        if ref is not None and _KEY_COLUMN[ref.kind] == "id":
            expr = f"t.{ref.column}"
        elif ref is not None:
            target = KINDS[ref.kind]
            expr = (
                f"(SELECT r.{_KEY_COLUMN[ref.kind]} FROM {target.table} r"
                f" WHERE r.id = t.{ref.column})"
            )
        elif kind.name == "contracts" and name == "starts_on":
            expr = "lower(t.period)"
        elif kind.name == "contracts" and name == "ends_on":
            expr = "upper(t.period) - 1"
        elif name in POLICY_FIELDS:
            expr = f"(SELECT p.{name} FROM compliance_policies p WHERE p.jurisdiction_id = t.id)"
        else:
            expr = f"t.{name}"
        out.append(f"{expr} AS {name}")
    return out


def _select_sql(kind: Kind) -> str:
    identity = "t.id" if kind.name in _NUMERIC_ID else "NULL::bigint"
    retired = f"t.{kind.retired_column}" if kind.retired_column else "NULL::timestamptz"
    columns = ", ".join(_read_columns(kind))
    return f"SELECT {identity} AS row_id, {retired} AS retired_at, {columns} FROM {kind.table} t"


def _key_condition(kind: Kind) -> str:
    """``t`` is the row of natural key ``%(k0)s, %(k1)s...``."""
    parts = []
    for index, name in enumerate(kind.key):
        ref = kind.refs.get(name)
        if kind.name == "contracts" and name == "starts_on":
            parts.append(f"lower(t.period) = %(k{index})s")
        elif ref is not None and _KEY_COLUMN[ref.kind] == "id":
            parts.append(f"t.{ref.column} = %(k{index})s")
        elif ref is not None:
            target = KINDS[ref.kind]
            parts.append(
                f"t.{ref.column} = (SELECT r.id FROM {target.table} r"
                f" WHERE r.{_KEY_COLUMN[ref.kind]} = %(k{index})s)"
            )
        else:
            parts.append(f"t.{_KEY_COLUMN.get(kind.name, name)} = %(k{index})s")
    return " AND ".join(parts)


def key_of(kind: Kind, record: FleetRecord | dict[str, Any]) -> Key:
    """The natural key of a record."""
    values = record if isinstance(record, dict) else record.model_dump()
    return tuple(values[name] for name in kind.key)


# -- references ------------------------------------------------------------------------------------


def resolve_refs(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    records: Sequence[FleetRecord],
    rows: Sequence[int | None],
    source: str | None = None,
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Each record as statement parameters, references turned into ids; problems for names that
    are not in the registry (or are retired)."""
    params = [r.model_dump() for r in records]
    problems: list[Problem] = []
    for name, ref in kind.refs.items():
        target = KINDS[ref.kind]
        wanted = sorted({p[name] for p in params if p[name] is not None})
        if not wanted:
            continue
        retired = f"t.{target.retired_column} IS NOT NULL" if target.retired_column else "false"
        found = {
            key: (row_id, gone)
            for key, row_id, gone in conn.cursor(row_factory=tuple_row)
            .execute(
                f"SELECT t.{_KEY_COLUMN[ref.kind]}, t.id, {retired} FROM {target.table} t"
                f" WHERE t.{_KEY_COLUMN[ref.kind]} = ANY(%s)",
                (wanted,),
            )
            .fetchall()
        }
        label = ref.kind.removesuffix("s").replace("_", " ")
        for values, row in zip(params, rows, strict=True):
            value = values[name]
            if value is None:
                continue
            hit = found.get(value)
            if hit is None:
                problems.append(
                    Problem(f"{label} {value!r} is not in the registry", name, row, source)
                )
            elif hit[1] and not (kind.name == "contracts" and ref.kind == "devices"):
                problems.append(Problem(f"{label} {value!r} is retired", name, row, source))
            else:
                values[name] = hit[0]
    for values in params:
        if "terms" in values:
            values["terms"] = Jsonb(values["terms"])
    return params, problems


# -- writes ------------------------------------------------------------------------------------


def write(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    records: Sequence[FleetRecord],
    at: datetime,
    create_only: bool = False,
    rows: Sequence[int | None] | None = None,
    source: str | None = None,
    sync_firms: bool = True,
) -> WriteResult:
    """Insert or update ``records`` of ``kind`` by natural key, in one transaction; a
    ``FleetError`` lists every problem and nothing is written. Writing contracts (or devices)
    sets their devices' firm in force, unless ``sync_firms`` is false (an import does it once,
    at the end)."""
    rows = list(rows) if rows is not None else [None] * len(records)
    params, problems = resolve_refs(conn, kind=kind, records=records, rows=rows, source=source)
    if problems:
        raise FleetError(problems)
    for values in params:
        values["_at"] = at
    statement = _write_sql(kind, create_only=create_only)
    result = WriteResult()
    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            cur.executemany(statement, params, returning=True)
            outcomes = _fetch_each(cur)
            if kind.name == "jurisdictions":
                changed_policy = _write_policies(conn, records=records, params=params)
            else:
                changed_policy = set()
    except psycopg.Error:
        raise FleetError(_find_bad_rows(conn, statement, params, rows, source, kind)) from None
    for record, outcome in zip(records, outcomes, strict=True):
        key = key_of(kind, record)
        if outcome is None:
            if create_only:
                row = rows[records.index(record)]
                raise FleetError(
                    [
                        Problem(
                            f"{_label(kind)} {_show(key)} already exists", kind.key[0], row, source
                        )
                    ]
                )
            if key[0] in changed_policy:
                result.updated.append(key)
            else:
                result.unchanged += 1
            continue
        row_id, created = outcome[0], bool(outcome[1])
        (result.created if created else result.updated).append(key)
        if row_id is not None:
            result.ids[key] = row_id
    if sync_firms and kind.name in ("contracts", "devices"):
        devices = {p["device" if kind.name == "contracts" else "id"] for p in params}
        sync_firm_in_force(conn, now=at, device_ids=sorted(devices))
    return result


def analyze(conn: psycopg.Connection, *, kinds: Iterable[Kind]) -> None:
    """Refresh the planner's statistics of tables a large write just filled (inside the
    import's transaction, where autovacuum cannot see the rows yet)."""
    for kind in kinds:
        conn.execute(f"ANALYZE {kind.table}")


def _fetch_each(cur: psycopg.Cursor) -> list[tuple[Any, ...] | None]:
    """The row each executed statement returned, or None when it returned none."""
    outcomes: list[tuple[Any, ...] | None] = []
    while True:
        outcomes.append(cur.fetchone())
        if not cur.nextset():
            return outcomes


def _write_policies(
    conn: psycopg.Connection, *, records: Sequence[FleetRecord], params: list[dict[str, Any]]
) -> set[str]:
    """A jurisdiction's maintenance policy values (null: the default's); returns the codes whose
    policy changed."""
    columns = ", ".join(POLICY_FIELDS)
    marks = ", ".join(f"%({f})s" for f in POLICY_FIELDS)
    sets = ", ".join(f"{f} = EXCLUDED.{f}" for f in POLICY_FIELDS)
    old = ", ".join(f"p.{f}" for f in POLICY_FIELDS)
    new = ", ".join(f"EXCLUDED.{f}" for f in POLICY_FIELDS)
    changed: set[str] = set()
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.executemany(
            f"INSERT INTO compliance_policies AS p (jurisdiction_id, {columns})"
            f" SELECT id, {marks} FROM jurisdictions WHERE code = %(code)s"
            f" ON CONFLICT (jurisdiction_id) DO UPDATE SET {sets}"
            f" WHERE ROW({old}) IS DISTINCT FROM ROW({new})"
            " RETURNING (SELECT code FROM jurisdictions WHERE id = p.jurisdiction_id)",
            params,
            returning=True,
        )
        for outcome in _fetch_each(cur):
            if outcome is not None:
                changed.add(outcome[0])
    return changed


def _find_bad_rows(
    conn: psycopg.Connection,
    statement: str,
    params: list[dict[str, Any]],
    rows: list[int | None],
    source: str | None,
    kind: Kind,
) -> list[Problem]:
    """After a batch failed: each row alone (each in a savepoint, all rolled back) to name the
    ones the database refuses and why."""
    problems: list[Problem] = []
    try:
        with conn.transaction(force_rollback=True):
            for values, row in zip(params, rows, strict=True):
                try:
                    with conn.transaction():
                        conn.execute(statement, values)
                except psycopg.Error as exc:
                    problems.append(_problem(exc, kind, row, source))
                    if len(problems) >= 100:
                        break
    except psycopg.Error as exc:  # the connection itself failed
        problems.append(Problem(f"database error: {exc}", None, None, source))
    return problems or [Problem("the database refused the batch", None, None, source)]


def _problem(exc: psycopg.Error, kind: Kind, row: int | None, source: str | None) -> Problem:
    """A database refusal in the words of the record: which column, and why."""
    diag = exc.diag
    constraint = diag.constraint_name or ""
    column = diag.column_name
    if column is None:
        column = next(
            (f for f in kind.fields if f in constraint or kind.column(f) in constraint), None
        )
    if isinstance(exc, psycopg.errors.ExclusionViolation):
        return Problem(
            "the period overlaps another contract of this device", "starts_on", row, source
        )
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return Problem(f"another record already has this {column or 'value'}", column, row, source)
    if column is not None and column.endswith("_id") and column.removesuffix("_id") in kind.fields:
        column = column.removesuffix("_id")
    return Problem(diag.message_primary or str(exc), column, row, source)


def _label(kind: Kind) -> str:
    return kind.name.removesuffix("s").replace("_", " ")


def _show(key: Key) -> str:
    return "/".join(str(k) for k in key)


def retire(conn: psycopg.Connection, *, kind: Kind, key: Key, at: datetime) -> bool:
    """Retire one record (a device is decommissioned, a technician made inactive, a contract
    ended on ``at``'s day, a certified component removed); history stays. False if absent."""
    params = {f"k{i}": v for i, v in enumerate(key)} | {"at": at}
    where = _key_condition(kind)
    if kind.name == "contracts":
        query = (
            "UPDATE contracts t SET period = daterange(lower(t.period),"
            " greatest(lower(t.period) + 1, least(upper(t.period), %(at)s::date + 1)))"
            f" WHERE {where} RETURNING t.device_id"
        )
    elif kind.name in ("components", "assignments"):
        query = f"DELETE FROM {kind.table} t WHERE {where} RETURNING t.device_id"
    elif kind.name == "technicians":
        query = (
            "UPDATE technicians t SET retired_at = coalesce(t.retired_at, %(at)s), active = false"
            f" WHERE {where} RETURNING t.id"
        )
    else:
        column = kind.retired_column
        query = (
            f"UPDATE {kind.table} t SET {column} = coalesce(t.{column}, %(at)s)"
            f" WHERE {where} RETURNING t.id"
        )
    row = conn.cursor(row_factory=tuple_row).execute(query, params).fetchone()
    if row is None:
        return False
    if kind.name in ("contracts", "devices"):
        sync_firm_in_force(conn, now=at, device_ids=[row[0]])
    return True


def sync_firm_in_force(
    conn: psycopg.Connection, *, now: datetime, device_ids: Sequence[str] | None = None
) -> int:
    """Set each device's firm to the one whose contract covers the site's today (none when no
    contract does, or when the device is decommissioned); returns how many changed."""
    only = "WHERE d.id = ANY(%(ids)s)" if device_ids is not None else ""
    # per device, the contract by its (device_id, lower(period)) index: no join over all
    cur = conn.execute(
        f"""
        UPDATE devices d SET firm_id = x.firm_id
        FROM (
            SELECT d.id, c.firm_id
            FROM devices d JOIN sites s ON s.id = d.site_id
            LEFT JOIN LATERAL (
                SELECT c.firm_id FROM contracts c
                WHERE c.device_id = d.id AND d.decommissioned_at IS NULL
                  AND lower(c.period) <= (%(now)s AT TIME ZONE s.timezone)::date
                  AND c.period @> (%(now)s AT TIME ZONE s.timezone)::date
                ORDER BY lower(c.period) DESC LIMIT 1
            ) c ON true
            {only}
        ) x
        WHERE x.id = d.id AND d.firm_id IS DISTINCT FROM x.firm_id
        """,
        {"now": now, "ids": list(device_ids or [])},
    )
    return cur.rowcount


# -- reads ---------------------------------------------------------------------------------------


def list_records(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    scope: sql.Composable | None = None,
    scope_params: dict[str, Any] | None = None,
    include_retired: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Records of ``kind`` (fields plus ``row_id`` and ``retired_at``) in natural-key order."""
    where: list[sql.Composable] = [scope or sql.SQL("true")]
    if not include_retired and kind.retired_column:
        where.append(sql.SQL(f"t.{kind.retired_column} IS NULL"))
    order = ", ".join(
        "lower(t.period)"
        if (kind.name, f) == ("contracts", "starts_on")
        else (kind.column(f) if f in kind.refs else _KEY_COLUMN.get(kind.name, f))
        for f in kind.key
    )
    query = sql.SQL("{select} WHERE {where} ORDER BY {order}{limit}").format(
        select=sql.SQL(_select_sql(kind)),
        where=sql.SQL(" AND ").join(where),
        order=sql.SQL(order),
        limit=sql.SQL(f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit else ""),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, scope_params or {}).fetchall()


def get(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    key: Key,
    scope: sql.Composable | None = None,
    scope_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One record by natural key (retired ones too); ``NotFound`` when absent or out of scope."""
    query = sql.SQL("{select} WHERE {key} AND ({scope})").format(
        select=sql.SQL(_select_sql(kind)),
        key=sql.SQL(_key_condition(kind)),
        scope=scope or sql.SQL("true"),
    )
    params = {f"k{i}": v for i, v in enumerate(key)} | (scope_params or {})
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    if row is None:
        raise NotFound(f"{_label(kind)} {_show(key)} not found")
    return row


def record_of(kind: Kind, row: dict[str, Any]) -> FleetRecord:
    """The record of a row read by ``get`` or ``list_records``."""
    return kind.record.model_validate({f: row[f] for f in kind.fields if row[f] is not None})


def ids_of(conn: psycopg.Connection, *, kind: Kind, keys: Iterable[Any]) -> dict[Any, int]:
    """Row ids of single-key records by natural key."""
    column = _KEY_COLUMN[kind.name]
    return dict(
        conn.cursor(row_factory=tuple_row)
        .execute(f"SELECT {column}, id FROM {kind.table} WHERE {column} = ANY(%s)", (list(keys),))
        .fetchall()
    )


# -- scopes (rule A2) ------------------------------------------------------------------------


def read_scope(*, kind: Kind, viewer: Viewer, devices: sql.Composable) -> sql.Composable:
    """Rows of ``kind`` (alias ``t``) ``viewer`` may read; ``devices`` is its device scope as a
    condition over alias ``d`` (api.scope.device_scope)."""
    if viewer.role == "admin" or kind.name == "manufacturers":
        return sql.SQL("true")  # manufacturers are public names

    def via_devices(link: str) -> sql.Composable:
        return sql.SQL("EXISTS (SELECT 1 FROM devices d WHERE {link} AND ({devices}))").format(
            link=sql.SQL(link), devices=devices
        )

    own: dict[str, str] = {}
    if viewer.role == "regulator":
        own = {
            "jurisdictions": "t.id = %(viewer_jurisdiction)s",
            "sites": "t.jurisdiction_id = %(viewer_jurisdiction)s",
        }
    elif viewer.role in ("firm_manager", "dispatcher", "technician"):
        own = {"firms": "t.id = %(viewer_firm)s", "technicians": "t.firm_id = %(viewer_firm)s"}
        if viewer.role == "technician":
            own["technicians"] = "t.id = %(viewer_technician)s"
    elif viewer.role == "safety_manager":
        own = {
            "user_units": "t.id = %(viewer_unit)s",
            "sites": "t.user_unit_id = %(viewer_unit)s",
            "safety_managers": "t.user_unit_id = %(viewer_unit)s",
        }
    links = {
        "jurisdictions": "d.site_id IN (SELECT id FROM sites WHERE jurisdiction_id = t.id)",
        "user_units": "d.site_id IN (SELECT id FROM sites WHERE user_unit_id = t.id)",
        "sites": "d.site_id = t.id",
        "safety_managers": "d.site_id IN (SELECT s.id FROM sites s"
        " WHERE s.user_unit_id = t.user_unit_id)",
        "firms": "d.firm_id = t.id",
        "technicians": "d.firm_id = t.firm_id",
        "gateways": "d.gateway_id = t.id",
        "devices": "d.id = t.id",
        "components": "d.id = t.device_id",
        "assignments": "d.id = t.device_id",
        "contracts": "d.id = t.device_id",
    }
    if viewer.role in ("firm_manager", "dispatcher", "technician") and kind.name == "contracts":
        return sql.SQL("t.firm_id = %(viewer_firm)s AND {}").format(via_devices(links["contracts"]))
    if kind.name in own and (viewer.role != "technician" or kind.name != "firms"):
        return sql.SQL(own[kind.name])
    return via_devices(links[kind.name])


def write_scope(*, kind: Kind, viewer: Viewer) -> sql.Composable:
    """Rows of ``kind`` (alias ``t``) ``viewer`` may write, before and after the write
    (fleet.flows.may says which kinds and actions a role may write at all)."""
    if viewer.role == "admin":
        return sql.SQL("true")
    if viewer.role == "regulator":
        return sql.SQL("t.id = %(viewer_jurisdiction)s")
    if viewer.role == "safety_manager":
        return sql.SQL("t.user_unit_id = %(viewer_unit)s")
    # a firm manager: its own contracts, technicians and devices, and what no other firm's
    # device depends on (a new customer's unit and site, a new gateway, a device not yet claimed)
    other = "x.firm_id IS NOT NULL AND x.firm_id <> %(viewer_firm)s"
    conditions = {
        "contracts": "t.firm_id = %(viewer_firm)s",
        "technicians": "t.firm_id = %(viewer_firm)s",
        "assignments": "EXISTS (SELECT 1 FROM technicians x WHERE x.id = t.technician_id"
        " AND x.firm_id = %(viewer_firm)s) AND EXISTS (SELECT 1 FROM devices x"
        " WHERE x.id = t.device_id AND x.firm_id = %(viewer_firm)s)",
        "devices": "(t.firm_id IS NULL OR t.firm_id = %(viewer_firm)s)",
        "components": f"NOT EXISTS (SELECT 1 FROM devices x WHERE x.id = t.device_id AND {other})",
        "sites": f"NOT EXISTS (SELECT 1 FROM devices x WHERE x.site_id = t.id AND {other})",
        "gateways": f"NOT EXISTS (SELECT 1 FROM devices x WHERE x.gateway_id = t.id AND {other})",
        "user_units": "NOT EXISTS (SELECT 1 FROM devices x JOIN sites s ON s.id = x.site_id"
        f" WHERE s.user_unit_id = t.id AND {other})",
        "manufacturers": "true",
    }
    return sql.SQL(conditions.get(kind.name, "false"))


def viewer_params(viewer: Viewer) -> dict[str, Any]:
    """The parameters ``read_scope`` and ``write_scope`` conditions name."""
    return {
        "viewer_firm": viewer.firm_id,
        "viewer_technician": viewer.technician_id,
        "viewer_unit": viewer.user_unit_id,
        "viewer_jurisdiction": viewer.jurisdiction_id,
    }


def in_scope(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    key: Key,
    scope: sql.Composable,
    params: dict[str, Any],
) -> bool:
    """True when the record of natural key ``key`` satisfies ``scope``."""
    query = sql.SQL("SELECT 1 FROM {table} t WHERE {key} AND ({scope})").format(
        table=sql.Identifier(kind.table), key=sql.SQL(_key_condition(kind)), scope=scope
    )
    keys = {f"k{i}": v for i, v in enumerate(key)}
    return conn.execute(query, keys | params).fetchone() is not None


# -- gateways and credentials ------------------------------------------------------------------


def gateway_devices(conn: psycopg.Connection, *, gateway_id: str) -> list[dict[str, Any]]:
    """The devices in service behind a gateway, with their Modbus addresses."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, kind, model, modbus_host, modbus_port, modbus_unit FROM devices"
            " WHERE gateway_id = %s AND decommissioned_at IS NULL ORDER BY id",
            (gateway_id,),
        ).fetchall()


def save_credential(
    conn: psycopg.Connection,
    *,
    username: str,
    principal_type: str,
    password_hash: str,
    at: datetime,
) -> None:
    """Store (or replace) the hashed MQTT password of a gateway, smart pole or service."""
    conn.execute(
        "INSERT INTO mqtt_credentials (username, principal_type, password_hash, issued_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (username) DO UPDATE SET"
        " principal_type = EXCLUDED.principal_type, password_hash = EXCLUDED.password_hash,"
        " issued_at = EXCLUDED.issued_at, revoked_at = NULL",
        (username, principal_type, password_hash, at),
    )


def live_credentials(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """(username, principal type, password hash) of every credential not revoked."""
    return (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT username, principal_type, password_hash FROM mqtt_credentials"
            " WHERE revoked_at IS NULL ORDER BY username"
        )
        .fetchall()
    )


def revoke_credential(conn: psycopg.Connection, *, username: str, at: datetime) -> bool:
    """Revoke an MQTT credential; False when there is none in force."""
    cur = conn.execute(
        "UPDATE mqtt_credentials SET revoked_at = %s WHERE username = %s AND revoked_at IS NULL",
        (at, username),
    )
    return cur.rowcount == 1


def principal_exists(conn: psycopg.Connection, *, kind: str, principal_id: str) -> bool:
    """True when a gateway (or, for a smart pole, a device) of that id is in service."""
    table, retired = (
        ("gateways", "retired_at") if kind == "gateway" else ("devices", "decommissioned_at")
    )
    return (
        conn.execute(
            f"SELECT 1 FROM {table} WHERE id = %s AND {retired} IS NULL", (principal_id,)
        ).fetchone()
        is not None
    )


# -- assets: devices with their live state (rule A2 scope given as SQL over alias ``d``) ------

# Which colour an asset gets on the fleet grid: a decision written as SQL so that the database
# builds the grid's JSON in one pass (hundreds of assets with a dozen values each); the codes
# come from vigil.catalog.
_ALARM_FAULTS = (FaultCode.TRAPPED_PASSENGER, FaultCode.ALARM_BUTTON)
_NOT_FAULTS = (FaultCode.NONE, FaultCode.OUT_OF_SERVICE, FaultCode.INSPECTION)


def _codes(values: tuple[int, ...]) -> str:
    return ", ".join(str(int(v)) for v in values)


# Over a row with the latest ``service_mode``, ``fault_code``, ``alarm_button``,
# ``lockout_state`` and ``lamps_out`` of device ``d`` (NULL when never reported) and ``metrics``,
# the number of metrics it reported at all.
CONDITION_SQL = f"""
CASE
    WHEN coalesce(st.metrics, 0) = 0 THEN '{Condition.UNKNOWN.value}'
    WHEN d.kind = '{DeviceKind.ELEVATOR.value}' THEN CASE
        WHEN st.alarm_button = 1 OR st.fault_code IN ({_codes(_ALARM_FAULTS)})
            THEN '{Condition.ALARM.value}'
        WHEN st.lockout_state = {int(LockoutState.APPLIED)} THEN '{Condition.LOCKED_OUT.value}'
        WHEN coalesce(st.fault_code, 0) NOT IN ({_codes(_NOT_FAULTS)})
            THEN '{Condition.FAULT.value}'
        WHEN st.service_mode = {int(ServiceMode.INSPECTION)} THEN '{Condition.INSPECTION.value}'
        WHEN st.service_mode IS NOT NULL AND st.service_mode <> {int(ServiceMode.NORMAL)}
            THEN '{Condition.OUT_OF_SERVICE.value}'
        ELSE '{Condition.OK.value}' END
    WHEN d.kind IN ('{DeviceKind.LIGHT_POLE.value}', '{DeviceKind.HIGH_MAST.value}') THEN CASE
        WHEN coalesce(st.lamps_out, 0) > 0 THEN '{Condition.FAULT.value}'
        ELSE '{Condition.OK.value}' END
    ELSE '{Condition.OK.value}'
END"""

# The worst open condition of an asset, for the colour of its tile (over the lateral ``ex``: its
# condition, open incident, worst open alarm, maintenance escalation, gateway offline).
STATUS_SQL = f"""
CASE
    WHEN ex.entrapment OR ex.condition = '{Condition.ALARM.value}'
        THEN '{Status.ENTRAPMENT.value}'
    WHEN ex.condition = '{Condition.FAULT.value}' THEN '{Status.FAULT.value}'
    WHEN ex.alarm_severity IN ('critical', 'major', 'warning') THEN '{Status.ALARM.value}'
    WHEN ex.escalation = 'locked_out' OR ex.condition = '{Condition.LOCKED_OUT.value}'
        THEN '{Status.LOCKED_OUT.value}'
    WHEN ex.escalation IN ('lockout_pending', 'lockout_recommended')
        THEN '{Status.LOCKOUT_PENDING.value}'
    WHEN ex.escalation IN ('overdue', 'overridden') THEN '{Status.OVERDUE.value}'
    WHEN ex.offline OR ex.condition = '{Condition.UNKNOWN.value}'
        THEN '{Status.OFFLINE.value}'
    WHEN ex.condition = '{Condition.INSPECTION.value}' THEN '{Status.INSPECTION.value}'
    WHEN ex.condition = '{Condition.OUT_OF_SERVICE.value}'
        THEN '{Status.OUT_OF_SERVICE.value}'
    WHEN ex.escalation = 'due_soon' THEN '{Status.DUE_SOON.value}'
    ELSE '{Status.OK.value}'
END"""

# The metrics CONDITION_SQL reads.
CONDITION_METRICS = ("service_mode", "fault_code", "alarm_button", "lockout_state", "lamps_out")


def iso_sql(column: str) -> str:
    """SQL text of a timestamptz as the API's models write times: UTC, ``Z``, microseconds
    only when there are any (formatted by the database: the fleet grid has thousands)."""
    return (
        f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN"
        f" date_part('microseconds', {column})::int %% 1000000 = 0 THEN '' ELSE"
        f" to_char({column} AT TIME ZONE 'UTC', '.US') END || 'Z'"
    )


_LATEST = ", ".join(
    f"max(ds.value) FILTER (WHERE ds.metric = '{m}') AS {m}" for m in CONDITION_METRICS
)

# Assets in the ``Asset`` shape, built as JSON by the database in one pass (state, condition
# and all): the fleet grid lists hundreds of assets with a dozen values each.
_ASSETS_JSON = """
SELECT coalesce(json_agg(a.asset ORDER BY a.id), '[]')::text AS items, max(a.total) AS total
FROM (
    SELECT d.id, count(*) OVER () AS total,
           (SELECT row_to_json(x) FROM (SELECT
                d.id, d.kind, d.model, d.serial_no, d.site_id, s.name AS site_name,
                s.tier AS site_tier, s.jurisdiction_id, s.user_unit_id, s.latitude, s.longitude,
                d.firm_id, f.name AS firm_name, d.manufacturer_id, d.gateway_id,
                {decommissioned} AS decommissioned_at,
                d.registration_code, d.next_inspection_due,
                (SELECT fi.kind FROM compliance_findings fi
                 WHERE fi.rule = 'M12' AND fi.subject_type = 'device' AND fi.subject_id = d.id
                   AND fi.closed_at IS NULL
                 ORDER BY fi.kind = 'inspection_lapsed' DESC LIMIT 1) AS inspection,
                ex.condition,
                {status} AS status,
                s.timezone, ex.escalation,
                CASE WHEN ex.alarm_severity IS NULL THEN NULL ELSE json_build_object(
                    'severity', ex.alarm_severity, 'type', ex.alarm_type) END AS alarm,
                {last_seen} AS last_seen,
                coalesce(st.state, json_build_object()) AS state) x) AS asset
    FROM devices d
    JOIN sites s ON s.id = d.site_id
    LEFT JOIN maintenance_firms f ON f.id = d.firm_id
    LEFT JOIN LATERAL (
        SELECT json_object_agg(ds.metric, json_build_object(
                   'value', ds.value, 'ts', {state_ts}, 'good', ds.good))
                   FILTER (WHERE %(metrics)s::text[] IS NULL OR ds.metric = ANY(%(metrics)s))
                   AS state,
               max(ds.ts) AS last_seen, count(*) AS metrics, {latest}
        FROM device_state ds WHERE ds.device_id = d.id
    ) st ON true
    LEFT JOIN LATERAL (
        SELECT {condition} AS condition,
               (SELECT e.state FROM maintenance_escalations e WHERE e.device_id = d.id)
                   AS escalation,
               al.severity AS alarm_severity, al.type AS alarm_type,
               EXISTS (SELECT 1 FROM rescue_incidents ri
                       WHERE ri.device_id = d.id AND ri.closed_at IS NULL) AS entrapment,
               coalesce((SELECT gs.state = 'offline' FROM gateway_status gs
                         WHERE gs.gateway_id = d.gateway_id), false) AS offline
        FROM (SELECT 1) one
        -- the worst open alarm of the asset; maintenance's own show as its escalation
        LEFT JOIN LATERAL (
            SELECT a.severity, a.type FROM alarms a
            WHERE a.source_type = 'device' AND a.source_id = d.id AND a.state <> 'cleared'
              AND a.type NOT LIKE 'maintenance.%%'
            ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1
                                     WHEN 'warning' THEN 2 ELSE 3 END, a.raised_at DESC
            LIMIT 1) al ON true
    ) ex ON true
    WHERE {{where}}
    ORDER BY d.id LIMIT %(limit)s OFFSET %(offset)s
) a
""".format(
    decommissioned=iso_sql("d.decommissioned_at"),
    condition=CONDITION_SQL,
    status=STATUS_SQL,
    last_seen=iso_sql("st.last_seen"),
    state_ts=iso_sql("ds.ts"),
    latest=_LATEST,
)

JsonDict = dict[str, Any]


async def _assets_json(
    conn: psycopg.AsyncConnection,
    *,
    where: list[sql.Composable],
    params: dict[str, Any],
    limit: int,
    offset: int,
    metrics: Sequence[str] | None = None,
) -> tuple[str, int]:
    """(JSON text of the assets matching ``where``, how many match in all); ``metrics`` limits
    the state sent (the condition always reads every metric)."""
    query = sql.SQL(_ASSETS_JSON).format(
        where=sql.SQL(" AND ").join(sql.SQL("({})").format(w) for w in where)
    )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, {**params, "limit": limit, "offset": offset, "metrics": metrics})
        row = await cur.fetchone()
    assert row is not None
    return row[0], int(row[1] or 0)


async def list_assets_json(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    kind: str | None = None,
    site_id: int | None = None,
    search: str | None = None,
    limit: int = 500,
    offset: int = 0,
    metrics: Sequence[str] | None = None,
) -> str:
    """The assets in ``scope`` (rule A2), by id, with their live state: an ``AssetPage`` as JSON."""
    where = [scope]
    params: dict[str, Any] = dict(scope_params)
    if kind is not None:
        where.append(sql.SQL("d.kind = %(kind)s"))
        params["kind"] = kind
    if site_id is not None:
        where.append(sql.SQL("d.site_id = %(site_id)s"))
        params["site_id"] = site_id
    if search:
        where.append(sql.SQL("d.id ILIKE %(search)s"))
        params["search"] = "%" + search.replace("\\", "\\\\").replace("%", r"\%") + "%"
    items, total = await _assets_json(
        conn,
        where=where,
        params=params,
        limit=limit,
        offset=offset,
        # an empty list would travel as NULL (every metric): no metric is named ""
        metrics=(list(metrics) or [""]) if metrics is not None else None,
    )
    if total == 0 and offset:
        total = await count_assets(conn, scope=scope, scope_params=scope_params)
    return f'{{"total":{total},"items":{items}}}'


async def get_assets(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_ids: Sequence[str],
) -> list[JsonDict]:
    """Those of ``device_ids`` in ``scope``, with their live state (``Asset`` shape)."""
    where = [scope, sql.SQL("d.id = ANY(%(ids)s)")]
    params = {**scope_params, "ids": list(device_ids)}
    items, _ = await _assets_json(
        conn, where=where, params=params, limit=max(1, len(device_ids)), offset=0
    )
    return json.loads(items)


async def get_asset(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_id: str,
) -> JsonDict | None:
    """One asset, or None when it does not exist or is outside ``scope``."""
    found = await get_assets(conn, scope=scope, scope_params=scope_params, device_ids=[device_id])
    return found[0] if found else None


async def count_assets(
    conn: psycopg.AsyncConnection, *, scope: sql.Composable, scope_params: dict[str, Any]
) -> int:
    """How many assets ``scope`` holds."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            sql.SQL("SELECT count(*) FROM devices d WHERE {}").format(scope),
            scope_params,
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def visible_device_ids(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_ids: Sequence[str],
) -> set[str]:
    """Those of ``device_ids`` in ``scope``."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            sql.SQL("SELECT d.id FROM devices d WHERE ({}) AND d.id = ANY(%(ids)s)").format(scope),
            {**scope_params, "ids": list(device_ids)},
        )
        return {row[0] for row in await cur.fetchall()}


async def list_events(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_id: str,
    start: datetime,
    end: datetime,
    metric: str | None,
    limit: int,
) -> list[Event]:
    """Events of one in-scope device in [start, end), newest first."""
    params: dict[str, Any] = {
        **scope_params,
        "device": device_id,
        "start": start,
        "end": end,
        "limit": limit,
        "metric": metric,
    }
    query = sql.SQL(
        """SELECT e.id, e.device_id, e.metric, e.ts, e.value, e.previous
           FROM events e JOIN devices d ON d.id = e.device_id
           WHERE ({}) AND e.device_id = %(device)s AND e.ts >= %(start)s AND e.ts < %(end)s
             AND (%(metric)s::text IS NULL OR e.metric = %(metric)s)
           ORDER BY e.ts DESC, e.id DESC LIMIT %(limit)s"""
    ).format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [Event.model_validate(row) for row in await cur.fetchall()]


async def telemetry_buckets(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> list[TelemetryBucket]:
    """One metric of an in-scope device over [start, end) in ``date_bin`` buckets.

    ``date_bin`` works the same on plain PostgreSQL and TimescaleDB; the origin is the Unix
    epoch so that bucket edges do not depend on the requested range. ``telemetry_series``
    reads one array element per stored instant through the (device, ts) key (migration 0105).
    """
    query = sql.SQL(
        """SELECT date_bin(make_interval(secs => %(bucket)s), t.ts,
                           TIMESTAMPTZ '1970-01-01 00:00:00+00') AS ts,
                  avg(t.value) AS avg, min(t.value) AS min, max(t.value) AS max,
                  (array_agg(t.value ORDER BY t.ts DESC))[1] AS last, count(*) AS count
           FROM telemetry_series(%(device)s, %(metric)s, %(start)s, %(end)s) t
           WHERE t.good AND EXISTS (SELECT 1 FROM devices d WHERE d.id = %(device)s AND ({}))
           GROUP BY 1 ORDER BY 1"""
    ).format(scope)
    params = {
        **scope_params,
        "bucket": bucket_s,
        "device": device_id,
        "metric": metric,
        "start": start,
        "end": end,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [TelemetryBucket.model_validate(row) for row in await cur.fetchall()]
