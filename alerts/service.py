"""Database reads and writes of the alerts package.

The alarm lifecycle functions take a psycopg connection and run inside the caller's
transaction: an alarm, its history, its queued deliveries and its ``vigil_alerts`` notice
commit together with the caller's own facts, or not at all. Each change is one call of a SQL
function (see ``alerts/migrations/0350_alerts.sql``), so sync (``raise_alarm``) and async
(``araise_alarm``) callers get the same behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg.types.json import Jsonb

from alerts.flows import roster_gaps_in
from alerts.models import (
    Alarm,
    AlarmChange,
    AlarmChangeOut,
    AlarmNotFound,
    AlarmOut,
    AlarmState,
    AlarmStateError,
    Audience,
    ChannelKind,
    Contact,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EscalationLevel,
    Firing,
    PartyType,
    RosterGap,
    Severity,
    Shift,
)
from vigil import notify
from vigil.db.rows import columns, first_value

# the audience is an array over a domain, which psycopg reads as text unless cast
ALARM_COLUMNS = columns(Alarm, casts={"audience": "text[]"})
_RAISE = (
    f"SELECT {ALARM_COLUMNS} FROM alerts_raise(%(source_type)s, %(source_id)s, %(type)s, "
    "%(severity)s, %(message)s, %(audience)s, %(details)s, %(at)s, %(actor)s, %(policy)s)"
)
# the functions return a row of nulls for an unknown alarm
_ACK = (
    f"SELECT {ALARM_COLUMNS} FROM alerts_acknowledge(%(alarm_id)s, %(by)s, %(at)s) "
    "WHERE id IS NOT NULL"
)
_CLEAR = (
    f"SELECT {ALARM_COLUMNS} FROM alerts_clear(%(alarm_id)s, %(by)s, %(at)s, %(reason)s) "
    "WHERE id IS NOT NULL"
)


def _raise_params(
    *,
    source_type: str,
    source_id: str | int,
    type: str,
    severity: Severity | str,
    message: str,
    audience: Sequence[Audience | str],
    at: datetime,
    details: dict[str, Any] | None,
    actor: str,
    policy: str | None,
) -> dict[str, Any]:
    if not audience:
        raise ValueError("an alarm needs at least one audience")
    if at.tzinfo is None:
        raise ValueError("alarm times must be timezone-aware")
    return {
        "source_type": source_type,
        "source_id": str(source_id),
        "type": type,
        "severity": Severity(severity).value,
        "message": message,
        "audience": [Audience(a).value for a in audience],
        "details": Jsonb(details or {}),
        "at": at,
        "actor": actor,
        "policy": policy,
    }


def _checked(alarm: Alarm | None, *, alarm_id: int, wanted: str) -> Alarm:
    if alarm is None:
        raise AlarmNotFound(f"no alarm {alarm_id}")
    if wanted == "acknowledge" and alarm.state is AlarmState.CLEARED:
        raise AlarmStateError(f"alarm {alarm_id} is cleared; it cannot be acknowledged")
    return alarm


def raise_alarm(
    conn: psycopg.Connection,
    *,
    source_type: str,
    source_id: str | int,
    type: str,
    severity: Severity | str,
    message: str,
    audience: Sequence[Audience | str],
    at: datetime,
    details: dict[str, Any] | None = None,
    actor: str = "system",
    policy: str | None = None,
) -> Alarm:
    """Raise an alarm, or re-trigger (and return) the open one of the same source and type."""
    params = _raise_params(
        source_type=source_type,
        source_id=source_id,
        type=type,
        severity=severity,
        message=message,
        audience=audience,
        at=at,
        details=details,
        actor=actor,
        policy=policy,
    )
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        alarm = cur.execute(_RAISE, params).fetchone()
    assert alarm is not None
    return alarm


def raise_alarms(conn: psycopg.Connection, *, alarms: Sequence[dict[str, Any]]) -> list[Alarm]:
    """Raise several alarms (each a dict of ``raise_alarm``'s keyword arguments but ``conn``), in
    order, in one pipelined round trip; the alarm of each, as ``raise_alarm`` returns it."""
    if not alarms:
        return []
    params = [
        _raise_params(**({"details": None, "actor": "system", "policy": None} | alarm))
        for alarm in alarms
    ]
    raised: list[Alarm] = []
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        cur.executemany(_RAISE, params, returning=True)
        while True:
            alarm = cur.fetchone()
            assert alarm is not None
            raised.append(alarm)
            if not cur.nextset():
                break
    return raised


def acknowledge_alarm(conn: psycopg.Connection, *, alarm_id: int, by: str, at: datetime) -> Alarm:
    """Acknowledge an active alarm, which stops its escalation; idempotent when acknowledged."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(_ACK, {"alarm_id": alarm_id, "by": by, "at": at}).fetchone()
    return _checked(row, alarm_id=alarm_id, wanted="acknowledge")


async def aacknowledge_alarm(
    conn: psycopg.AsyncConnection, *, alarm_id: int, by: str, at: datetime
) -> Alarm:
    """Async ``acknowledge_alarm``."""
    async with conn.cursor(row_factory=class_row(Alarm)) as cur:
        await cur.execute(_ACK, {"alarm_id": alarm_id, "by": by, "at": at})
        row = await cur.fetchone()
    return _checked(row, alarm_id=alarm_id, wanted="acknowledge")


def clear_alarm(
    conn: psycopg.Connection, *, alarm_id: int, by: str, at: datetime, reason: str = ""
) -> Alarm:
    """Clear an open alarm; idempotent when already cleared."""
    params = {"alarm_id": alarm_id, "by": by, "at": at, "reason": reason}
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(_CLEAR, params).fetchone()
    return _checked(row, alarm_id=alarm_id, wanted="clear")


async def aclear_alarm(
    conn: psycopg.AsyncConnection, *, alarm_id: int, by: str, at: datetime, reason: str = ""
) -> Alarm:
    """Async ``clear_alarm``."""
    params = {"alarm_id": alarm_id, "by": by, "at": at, "reason": reason}
    async with conn.cursor(row_factory=class_row(Alarm)) as cur:
        await cur.execute(_CLEAR, params)
        row = await cur.fetchone()
    return _checked(row, alarm_id=alarm_id, wanted="clear")


def clear_alarms_of(
    conn: psycopg.Connection,
    *,
    source_type: str,
    source_id: str | int,
    type: str,
    by: str,
    at: datetime,
    reason: str = "",
) -> Alarm | None:
    """Clear the open alarm of a source and type, if there is one."""
    found = open_alarm(conn, source_type=source_type, source_id=source_id, type=type)
    if found is None:
        return None
    return clear_alarm(conn, alarm_id=found.id, by=by, at=at, reason=reason)


def get_alarm(conn: psycopg.Connection, *, alarm_id: int) -> Alarm:
    """One alarm by id."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        alarm = cur.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = %s", (alarm_id,)
        ).fetchone()
    if alarm is None:
        raise AlarmNotFound(f"no alarm {alarm_id}")
    return alarm


def open_alarm(
    conn: psycopg.Connection, *, source_type: str, source_id: str | int, type: str
) -> Alarm | None:
    """The open (active or acknowledged) alarm of a source and type, if any."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE source_type = %s AND source_id = %s "
            "AND type = %s AND state <> 'cleared'",
            (source_type, str(source_id), type),
        ).fetchone()


def list_alarms(
    conn: psycopg.Connection,
    *,
    states: Sequence[AlarmState] = (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED),
    source_type: str | None = None,
    source_id: str | int | None = None,
    type: str | None = None,
    limit: int = 500,
) -> list[Alarm]:
    """Alarms in the given states, newest first."""
    where = ["state = ANY(%(states)s)"]
    params: dict[str, Any] = {"states": [s.value for s in states], "limit": limit}
    for column, value in (("source_type", source_type), ("source_id", source_id), ("type", type)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = str(value)
    query = (
        f"SELECT {ALARM_COLUMNS} FROM alarms WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(query, params).fetchall()


def alarm_changes(conn: psycopg.Connection, *, alarm_id: int) -> list[AlarmChange]:
    """The history of one alarm, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT alarm_id, change, at, actor, detail FROM alarm_changes "
            "WHERE alarm_id = %s ORDER BY id",
            (alarm_id,),
        ).fetchall()
    return [AlarmChange(**row) for row in rows]


# -- escalation policies (rule S2) ---------------------------------------------------------------


def create_policy(
    conn: psycopg.Connection,
    *,
    name: str,
    levels: Sequence[EscalationLevel],
    alarm_types: Sequence[str] = (),
) -> int:
    """Store an escalation policy with its ordered levels; route the given alarm types to it."""
    numbers = [lv.level for lv in levels]
    if not levels or numbers != list(range(1, len(levels) + 1)):
        raise ValueError("escalation levels must be numbered 1, 2, 3, ... in order")
    delays = [lv.after_s for lv in levels]
    if delays != sorted(delays):
        raise ValueError("a later escalation level cannot fire before an earlier one")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO escalation_policies (name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()
        assert row is not None
        policy_id: int = row["id"]
        cur.executemany(
            "INSERT INTO escalation_levels (policy_id, level, after_s, audience) "
            "VALUES (%s, %s, %s, %s::alarm_audience[])",
            [
                (policy_id, lv.level, lv.after_s, [Audience(a).value for a in lv.audience])
                for lv in levels
            ],
        )
        cur.executemany(
            "INSERT INTO alarm_routes (alarm_type, policy_id) VALUES (%s, %s) "
            "ON CONFLICT (alarm_type) DO UPDATE SET policy_id = EXCLUDED.policy_id",
            [(alarm_type, policy_id) for alarm_type in alarm_types],
        )
    return policy_id


# Rule S2: the default chain, technician → supervisor → manager → leadership. Each level's delay
# counts from the alarm (or its re-trigger); once acknowledged the delays stretch by the policy's
# factor (4), and the chain stops only when the alarm is cleared.
DEFAULT_CHAIN_NAME = "default-chain"
DEFAULT_CHAIN = (
    EscalationLevel(1, 300, (Audience.TECHNICIAN,)),
    EscalationLevel(2, 900, (Audience.SUPERVISOR,)),
    EscalationLevel(3, 3600, (Audience.FIRM_MANAGER,)),
    EscalationLevel(4, 14_400, (Audience.LEADERSHIP,)),
)


def ensure_default_chain(conn: psycopg.Connection, *, alarm_types: Sequence[str]) -> int:
    """The default S2 chain, created once; routes ``alarm_types`` to it. Returns its id."""
    row = conn.execute(
        "SELECT id FROM escalation_policies WHERE name = %s", (DEFAULT_CHAIN_NAME,)
    ).fetchone()
    if row is None:
        return create_policy(
            conn, name=DEFAULT_CHAIN_NAME, levels=DEFAULT_CHAIN, alarm_types=alarm_types
        )
    policy_id = int(first_value(row))
    conn.cursor().executemany(
        "INSERT INTO alarm_routes (alarm_type, policy_id) VALUES (%s, %s) "
        "ON CONFLICT (alarm_type) DO UPDATE SET policy_id = EXCLUDED.policy_id",
        [(alarm_type, policy_id) for alarm_type in alarm_types],
    )
    return policy_id


async def afire_due_escalations(conn: psycopg.AsyncConnection, *, now: datetime) -> list[Firing]:
    """Fire every escalation level due by ``now`` on open alarms (once per run; later once
    acknowledged, rule S2)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM alerts_fire_due(%s)", (now,))
        rows = await cur.fetchall()
    return [Firing(**row) for row in rows]


async def anext_escalation(conn: psycopg.AsyncConnection) -> datetime | None:
    """When the next escalation level of any open alarm falls due."""
    cur = await conn.execute("SELECT alerts_next_escalation()")
    row = await cur.fetchone()
    return first_value(row)


def escalation_firings(conn: psycopg.Connection, *, alarm_id: int) -> list[Firing]:
    """Levels fired for one alarm, in order."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT alarm_id, run, level FROM escalation_firings WHERE alarm_id = %s "
            "ORDER BY run, level",
            (alarm_id,),
        ).fetchall()
    return [Firing(**row) for row in rows]


# -- contacts -------------------------------------------------------------------------------------


def add_contact(
    conn: psycopg.Connection,
    *,
    party_type: PartyType | str,
    party_id: int | None,
    audience: Audience | str,
    channel: ChannelKind | str,
    address: str,
) -> Contact:
    """Register where a party hears about an audience."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO contacts (party_type, party_id, audience, channel, address) "
            "VALUES (%s, %s, %s, %s, %s) "
            "RETURNING id, party_type, party_id, audience, channel, address, active",
            (
                PartyType(party_type).value,
                party_id,
                Audience(audience).value,
                ChannelKind(channel).value,
                address,
            ),
        ).fetchone()
    assert row is not None
    return Contact(
        id=row["id"],
        party_type=PartyType(row["party_type"]),
        party_id=row["party_id"],
        audience=Audience(row["audience"]),
        channel=ChannelKind(row["channel"]),
        address=row["address"],
        active=row["active"],
    )


def notify_party(
    conn: psycopg.Connection,
    *,
    party_type: PartyType | str,
    party_id: int | None,
    audience: Audience | str,
    subject_type: str,
    subject_id: str | int,
    reason: str,
    payload: dict[str, Any],
    at: datetime,
    alarm_id: int | None = None,
) -> int:
    """Queue a message to every active contact of one party for one audience; returns count."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "INSERT INTO deliveries (alarm_id, subject_type, subject_id, reason, audience, "
            "contact_id, channel, address, payload, created_at, next_attempt_at) "
            "SELECT %(alarm_id)s, %(subject_type)s, %(subject_id)s, %(reason)s, c.audience, c.id, "
            "c.channel, c.address, %(payload)s, %(at)s, %(at)s FROM contacts c "
            "WHERE c.party_type = %(party_type)s AND c.party_id IS NOT DISTINCT FROM %(party_id)s "
            "AND c.audience = %(audience)s AND c.active",
            {
                "alarm_id": alarm_id,
                "subject_type": subject_type,
                "subject_id": str(subject_id),
                "reason": reason,
                "payload": Jsonb({**payload, "reason": reason, "at": at.isoformat()}),
                "at": at,
                "party_type": PartyType(party_type).value,
                "party_id": party_id,
                "audience": Audience(audience).value,
            },
        )
        queued = cur.rowcount
        if queued:
            cur.execute(
                "SELECT pg_notify(%s, %s)",
                (notify.ALERTS, json.dumps({"kind": "deliveries", "subject_type": subject_type})),
            )
    return queued


# -- deliveries -----------------------------------------------------------------------------------


_DELIVERY_COLUMNS = columns(Delivery)


async def aclaim_due_deliveries(
    conn: psycopg.AsyncConnection,
    *,
    now: datetime,
    lease: timedelta,
    limit: int = 100,
    sending: Sequence[int] = (),
) -> list[Delivery]:
    """Pending deliveries due by ``now``, leased to this worker so no other sends them too
    (``sending``: this worker's own in-flight deliveries, never claimed twice)."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(Delivery)) as cur:
        await cur.execute(
            f"UPDATE deliveries SET next_attempt_at = %(until)s WHERE id IN ("
            f"  SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= %(now)s"
            f"  AND id <> ALL(%(sending)s)"
            f"  ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_DELIVERY_COLUMNS}",
            {"now": now, "until": now + lease, "limit": limit, "sending": list(sending)},
        )
        rows = await cur.fetchall()
    return sorted(rows, key=lambda d: d.id)


async def arecord_attempt(
    conn: psycopg.AsyncConnection,
    *,
    delivery_id: int,
    at: datetime,
    ok: bool,
    detail: str,
    retry_at: datetime | None,
) -> DeliveryStatus:
    """Log one attempt; the delivery is delivered, failed, or pending until ``retry_at``."""
    if ok:
        status = DeliveryStatus.DELIVERED
    elif retry_at is None:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.PENDING
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "UPDATE deliveries SET attempts = attempts + 1, status = %(status)s, "
            "next_attempt_at = coalesce(%(retry_at)s, next_attempt_at), "
            "finished_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE %(at)s END, "
            "last_error = CASE WHEN %(ok)s THEN last_error ELSE %(detail)s END "
            "WHERE id = %(id)s RETURNING attempts",
            {
                "status": status.value,
                "retry_at": retry_at,
                "at": at,
                "ok": ok,
                "detail": detail,
                "id": delivery_id,
            },
        )
        attempt = first_value(await cur.fetchone())
        assert attempt is not None
        await cur.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, detail) "
            "VALUES (%s, %s, %s, %s, %s)",
            (delivery_id, attempt, at, ok, detail),
        )
        notice = {
            "kind": "delivery_attempt",
            "delivery_id": delivery_id,
            "attempt": attempt,
            "ok": ok,
            "status": status.value,
        }
        await cur.execute("SELECT pg_notify(%s, %s)", (notify.ALERTS, json.dumps(notice)))
    return status


async def anext_delivery_due(conn: psycopg.AsyncConnection) -> datetime | None:
    """When the earliest pending delivery is due."""
    cur = await conn.execute("SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'")
    return first_value(await cur.fetchone())


def deliveries(
    conn: psycopg.Connection,
    *,
    alarm_id: int | None = None,
    subject_type: str | None = None,
    subject_id: str | int | None = None,
) -> list[Delivery]:
    """Deliveries of an alarm or a subject, oldest first."""
    where, params = ["true"], {}
    if alarm_id is not None:
        where.append("alarm_id = %(alarm_id)s")
        params["alarm_id"] = alarm_id
    if subject_type is not None:
        where.append("subject_type = %(subject_type)s")
        params["subject_type"] = subject_type
    if subject_id is not None:
        where.append("subject_id = %(subject_id)s")
        params["subject_id"] = str(subject_id)
    with conn.cursor(row_factory=class_row(Delivery)) as cur:
        return cur.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(where)} ORDER BY id",
            params,
        ).fetchall()


def delivery_attempts(conn: psycopg.Connection, *, delivery_id: int) -> list[DeliveryAttempt]:
    """The delivery log of one delivery."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT delivery_id, attempt, at, ok, detail FROM delivery_attempts "
            "WHERE delivery_id = %s ORDER BY attempt",
            (delivery_id,),
        ).fetchall()
    return [DeliveryAttempt(**row) for row in rows]


# -- on-call rosters (rule R3) --------------------------------------------------------------------


def create_roster(conn: psycopg.Connection, *, firm_id: int, name: str) -> int:
    """A named on-call roster of a firm."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "INSERT INTO rosters (firm_id, name) VALUES (%s, %s) RETURNING id", (firm_id, name)
        ).fetchone()
    assert row is not None
    return int(row[0])


def add_shift(
    conn: psycopg.Connection, *, roster_id: int, technician_id: int, start: datetime, end: datetime
) -> Shift:
    """Put a technician of the roster's firm on call from ``start`` to ``end``."""
    if end <= start:
        raise ValueError("a shift must end after it starts")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO roster_shifts (roster_id, firm_id, technician_id, during) "
            "SELECT r.id, r.firm_id, %s, tstzrange(%s, %s, '[)') FROM rosters r WHERE r.id = %s "
            "RETURNING id, roster_id, firm_id, technician_id, lower(during) AS start, "
            "upper(during) AS end",
            (technician_id, start, end, roster_id),
        ).fetchone()
    if row is None:
        raise ValueError(f"no roster {roster_id}")
    return Shift(**row)


def on_call(conn: psycopg.Connection, *, firm_id: int, at: datetime) -> list[int]:
    """Technicians of a firm on call at ``at`` (rule R3)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT DISTINCT technician_id FROM roster_shifts "
            "WHERE firm_id = %s AND during @> %s::timestamptz ORDER BY technician_id",
            (firm_id, at),
        ).fetchall()
    return [row[0] for row in rows]


def roster_gaps(
    conn: psycopg.Connection,
    *,
    firm_id: int,
    start: datetime,
    end: datetime,
    timezone: str = "UTC",
) -> list[RosterGap]:
    """Periods in [start, end) when the firm has nobody qualified on call (rules R3, M10).

    A shift counts only while its technician is active and both the technician's certificate
    and the firm's licence are valid: through the expiry date, read at ``timezone`` (the site
    zone of the elevators being covered).
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT lower(rs.during), least(upper(rs.during), "
            "  ((least(t.certificate_expires_on, f.licence_expires_on) + 1)::timestamp "
            "   AT TIME ZONE %(tz)s)) "
            "FROM roster_shifts rs JOIN technicians t ON t.id = rs.technician_id "
            "JOIN maintenance_firms f ON f.id = rs.firm_id "
            "WHERE rs.firm_id = %(firm)s AND t.active "
            "AND rs.during && tstzrange(%(start)s, %(end)s, '[)') ORDER BY lower(rs.during)",
            {"firm": firm_id, "start": start, "end": end, "tz": timezone},
        ).fetchall()
    return roster_gaps_in(
        firm_id=firm_id,
        start=start,
        end=end,
        shifts=[(row[0], row[1]) for row in rows if row[1] > row[0]],
    )


def contracted_elevators_by_zone(conn: psycopg.Connection) -> dict[tuple[int, str], list[str]]:
    """Elevators in service by contracted firm and site time zone (rule R3 judges each)."""
    groups: dict[tuple[int, str], list[str]] = {}
    with conn.cursor(row_factory=tuple_row) as cur:
        for firm_id, timezone, device_id in cur.execute(
            "SELECT d.firm_id, s.timezone, d.id FROM devices d JOIN sites s ON s.id = d.site_id "
            "WHERE d.firm_id IS NOT NULL AND d.kind = 'elevator' AND d.decommissioned_at IS NULL "
            "ORDER BY d.firm_id, s.timezone, d.id"
        ):
            groups.setdefault((firm_id, timezone), []).append(device_id)
    return groups


# -- scoped reads for the alarms API (rule A2) ----------------------------------------------

_ALARM_OUT_COLUMNS = sql.SQL(
    """a.id, a.source_type, a.source_id,
       CASE WHEN a.source_type = 'device' THEN a.source_id END AS device_id,
       a.type, a.severity, a.message, a.state, a.details, a.raised_at, a.last_triggered_at,
       a.trigger_count, a.acknowledged_at, a.acknowledged_by, a.cleared_at, a.cleared_by"""
)


async def list_scoped_alarms(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    states: Sequence[str],
    device_id: str | None = None,
    type: str | None = None,
    limit: int = 200,
) -> list[AlarmOut]:
    """Alarms in ``scope`` (a condition over alias ``a``, rule A2), newest first."""
    params: dict[str, Any] = {**scope_params, "states": list(states), "limit": limit}
    where = [sql.SQL("({})").format(scope), sql.SQL("a.state = ANY(%(states)s)")]
    if device_id is not None:
        where.append(sql.SQL("a.source_type = 'device' AND a.source_id = %(device)s"))
        params["device"] = device_id
    if type is not None:
        where.append(sql.SQL("a.type = %(type)s"))
        params["type"] = type
    query = sql.SQL(
        "SELECT {} FROM alarms a WHERE {} ORDER BY a.last_triggered_at DESC, a.id DESC"
        " LIMIT %(limit)s"
    ).format(_ALARM_OUT_COLUMNS, sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [AlarmOut.model_validate(row) for row in await cur.fetchall()]


async def get_scoped_alarm(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    alarm_id: int,
) -> AlarmOut | None:
    """One alarm, or None when missing or outside ``scope``."""
    query = sql.SQL("SELECT {} FROM alarms a WHERE a.id = %(id)s AND ({})").format(
        _ALARM_OUT_COLUMNS, scope
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "id": alarm_id})
        row = await cur.fetchone()
    return AlarmOut.model_validate(row) if row else None


async def visible_alarm_ids(
    conn: psycopg.AsyncConnection,
    *,
    scope: sql.Composable,
    scope_params: dict[str, Any],
    alarm_ids: Sequence[int],
) -> set[int]:
    """Those of ``alarm_ids`` in ``scope``."""
    query = sql.SQL("SELECT a.id FROM alarms a WHERE a.id = ANY(%(ids)s) AND ({})").format(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope_params, "ids": list(alarm_ids)})
        return {row["id"] for row in await cur.fetchall()}


async def alarm_history(conn: psycopg.AsyncConnection, *, alarm_id: int) -> list[AlarmChangeOut]:
    """The changes of one alarm, oldest first (call after the scope check)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT change, at, actor, detail FROM alarm_changes WHERE alarm_id = %s ORDER BY id",
            (alarm_id,),
        )
        return [AlarmChangeOut.model_validate(row) for row in await cur.fetchall()]


# -- figures for the metrics endpoint --------------------------------------------------------------


def open_alarm_counts(conn: psycopg.Connection) -> list[tuple[dict[str, str], float]]:
    """Alarms not yet cleared, by severity."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT severity, count(*) FROM alarms WHERE state <> 'cleared' GROUP BY severity"
        ).fetchall()
    return [({"severity": severity}, float(count)) for severity, count in rows]
