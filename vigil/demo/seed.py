"""The demo's world: jurisdictions, sites, a maintenance firm with its technicians and roster,
the simulated devices registered behind one gateway, contracts and demo logins.

Everything is written through plain SQL for the core tables and through the domain services
(alerts rosters and contacts, API users) where a domain owns the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from vigil.catalog import DeviceKind
from vigil.config import DemoSettings

DEMO_PASSWORD = "vigil-demo"
GATEWAY_ID = "gw-demo"
LAPSING_ELEVATOR = "lift-0003"  # registered 16 days ago: overdue from the start (rule M1)
DUE_SOON_ELEVATOR = "lift-0004"  # due in two days (rule M5 warning)

# name, latitude, longitude, tier, jurisdiction code
_SITES = (
    ("Riverside Towers", 31.2304, 121.4737, "city", "sh-huangpu"),
    ("Century Park Plaza", 31.2155, 121.5450, "city", "sh-huangpu"),
    ("Lakeside Hospital", 31.3880, 120.9780, "elsewhere", "js-kunshan"),
)
# name, home latitude, home longitude, certificate valid for days
_TECHNICIANS = (
    ("Wang Lei", 31.2280, 121.4800, 700),
    ("Li Na", 31.2100, 121.5300, 500),
    ("Zhang Wei", 31.3700, 120.9600, 900),
    ("Chen Jing", 31.2400, 121.5000, 20),  # expires within 30 days: warned (rule M10)
)


@dataclass
class DemoWorld:
    """Ids of what the seed created, for the scenario and the banner."""

    firm_id: int
    technician_ids: dict[str, int]
    site_ids: list[int]
    jurisdiction_ids: dict[str, int]
    devices: dict[str, str] = field(default_factory=dict)  # device id -> kind
    logins: dict[str, str] = field(default_factory=dict)  # username -> what they see


def seed_world(
    conn: psycopg.Connection,
    *,
    start: datetime,
    devices: dict[str, DeviceKind],
    settings: DemoSettings,
) -> DemoWorld:
    """Create the demo's parties and register ``devices`` (id -> kind) behind the demo gateway."""
    cur = conn.cursor(row_factory=dict_row)
    jurisdictions = {
        "sh-huangpu": _insert(
            cur,
            "INSERT INTO jurisdictions (code, name, default_tier, lockout_mode) "
            "VALUES ('sh-huangpu', 'Shanghai Huangpu District', 'city', 'enforce') RETURNING id",
        ),
        "js-kunshan": _insert(
            cur,
            "INSERT INTO jurisdictions (code, name, default_tier, lockout_mode) "
            "VALUES ('js-kunshan', 'Kunshan County', 'elsewhere', 'recommend') RETURNING id",
        ),
    }
    # Every number of RULES.md is a default: the demo district shortens the lockout grace period
    # (rule M6) to one hour so the whole escalation fits in a few real minutes.
    cur.execute(
        "INSERT INTO compliance_policies (jurisdiction_id, grace_hours) VALUES (%s, 1)",
        (jurisdictions["sh-huangpu"],),
    )
    manufacturer = _insert(
        cur, "INSERT INTO manufacturers (name) VALUES ('Huaxia Elevator Co.') RETURNING id"
    )
    firm = _insert(
        cur,
        "INSERT INTO maintenance_firms (name, licence_no, licence_expires_on, duty_phone) "
        "VALUES ('Shenglong Lift Service', 'TS3131-2024-0042', %s, '+86 21 5555 0100') "
        "RETURNING id",
        ((start + timedelta(days=800)).date(),),
    )
    cur.execute(
        "INSERT INTO service_points (firm_id, name, latitude, longitude) "
        "VALUES (%s, 'Huangpu depot', 31.2250, 121.4900), (%s, 'Kunshan depot', 31.3800, 120.9700)",
        (firm, firm),
    )
    sites: list[int] = []
    for n, (name, lat, lon, tier, code) in enumerate(_SITES[: settings.sites], start=1):
        unit = _insert(
            cur,
            "INSERT INTO user_units (name, safety_manager_name, safety_manager_phone) "
            "VALUES (%s, %s, %s) RETURNING id",
            (f"{name} Property Management", f"Safety manager {n}", f"+86 21 5555 02{n:02d}"),
        )
        sites.append(
            _insert(
                cur,
                "INSERT INTO sites (user_unit_id, jurisdiction_id, name, address, latitude, "
                "longitude, tier) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (unit, jurisdictions[code], name, f"{n} Demo Road", lat, lon, tier),
            )
        )
    technicians: dict[str, int] = {}
    for name, lat, lon, valid_days in _TECHNICIANS:
        technicians[name] = _insert(
            cur,
            "INSERT INTO technicians (firm_id, name, phone, certificate_no, "
            "certificate_expires_on, home_latitude, home_longitude) "
            "VALUES (%s, %s, '+86 139 0000 0000', %s, %s, %s, %s) RETURNING id",
            (
                firm,
                name,
                f"T-{len(technicians) + 1:04d}",
                (start + timedelta(days=valid_days)).date(),
                lat,
                lon,
            ),
        )
    cur.execute(
        "INSERT INTO gateways (id, site_id, name) VALUES (%s, %s, 'Demo edge gateway')",
        (GATEWAY_ID, sites[0]),
    )
    world = DemoWorld(firm, technicians, sites, jurisdictions)
    for index, (device_id, kind) in enumerate(sorted(devices.items())):
        site = sites[index % len(sites)]
        # A new contract's clock starts at registration (rule M1): stagger them over 12 days,
        # with one elevator already lapsed and one due soon.
        registered = start - timedelta(days=1 + index % 12, hours=index % 7)
        if device_id == LAPSING_ELEVATOR:
            registered, site = start - timedelta(days=16), sites[0]
        elif device_id == DUE_SOON_ELEVATOR:
            registered, site = start - timedelta(days=13), sites[0]
        elevator = kind is DeviceKind.ELEVATOR
        cur.execute(
            "INSERT INTO devices (id, kind, model, site_id, firm_id, manufacturer_id, gateway_id, "
            "serial_no, registered_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                device_id,
                kind.value,
                _MODELS[kind],
                site,
                firm if elevator else None,
                manufacturer if elevator else None,
                GATEWAY_ID,
                f"SN-{index + 1:06d}",
                registered,
            ),
        )
        if elevator:
            cur.execute(
                "INSERT INTO contracts (firm_id, user_unit_id, device_id, period) "
                "SELECT %s, s.user_unit_id, %s, daterange(%s, %s) FROM sites s WHERE s.id = %s",
                (firm, device_id, registered.date(), (start + timedelta(days=365)).date(), site),
            )
        world.devices[device_id] = kind.value
    _seed_roster(conn, firm=firm, technicians=technicians, start=start)
    _seed_contacts(conn, firm=firm, manufacturer=manufacturer, technicians=technicians)
    return world


_MODELS = {
    DeviceKind.ELEVATOR: "lift-controller",
    DeviceKind.ENERGY_METER: "sdm630",
    DeviceKind.WATER_METER: "water-meter",
    DeviceKind.LIGHT_POLE: "street-light",
    DeviceKind.HIGH_MAST: "high-mast-8",
}


def _insert(cur: psycopg.Cursor, query: str, params: tuple | None = None) -> int:
    row = cur.execute(query, params).fetchone()
    assert row is not None
    return int(row["id"])


def _seed_roster(
    conn: psycopg.Connection, *, firm: int, technicians: dict[str, int], start: datetime
) -> None:
    """Rule R3: every technician is on the firm's 24-hour duty roster for the next month."""
    from alerts import service as alerts

    roster = alerts.create_roster(conn, firm_id=firm, name="24-hour duty")
    begin = start - timedelta(days=1)
    for technician_id in technicians.values():
        alerts.add_shift(
            conn,
            roster_id=roster,
            technician_id=technician_id,
            start=begin,
            end=begin + timedelta(days=32),
        )


def _seed_contacts(
    conn: psycopg.Connection, *, firm: int, manufacturer: int, technicians: dict[str, int]
) -> None:
    """Alarms reach the firm's duty line and the manufacturer on the console stream, and climb
    the default S2 chain (technician, supervisor, manager, leadership) until cleared."""
    from alerts import service as alerts

    for audience in ("firm", "duty_manager", "firm_manager", "supervisor", "leadership"):
        alerts.add_contact(
            conn,
            party_type="firm",
            party_id=firm,
            audience=audience,
            channel="console",
            address="console",
        )
    for technician_id in technicians.values():
        alerts.add_contact(
            conn,
            party_type="technician",
            party_id=technician_id,
            audience="technician",
            channel="console",
            address="console",
        )
    alerts.add_contact(
        conn,
        party_type="manufacturer",
        party_id=manufacturer,
        audience="manufacturer",
        channel="console",
        address="console",
    )
    alerts.ensure_default_chain(conn, alarm_types=DEMO_CHAINED_ALARMS)


# Alarm types that climb the default S2 chain in the demo.
DEMO_CHAINED_ALARMS = (
    "maintenance.overdue",
    "maintenance.lockout",
    "maintenance.lockout_recommended",
    "controller_fault",
    "lamp_failure",
    "mast_relamping",
)


async def seed_logins(database_url: str, *, world: DemoWorld) -> dict[str, str]:
    """Demo users, one per role, all with the password ``DEMO_PASSWORD``."""
    from api.auth import service as auth

    first_tech = next(iter(world.technician_ids.values()))
    logins = [
        ("admin", "admin", {}, "everything"),
        ("dispatcher", "dispatcher", {"firm_id": world.firm_id}, "the firm's fleet, incidents"),
        ("manager", "firm_manager", {"firm_id": world.firm_id}, "the firm's fleet and reports"),
        (
            "tech",
            "technician",
            {"firm_id": world.firm_id, "technician_id": first_tech},
            "assigned elevators",
        ),
        (
            "regulator",
            "regulator",
            {"jurisdiction_id": world.jurisdiction_ids["sh-huangpu"]},
            "Huangpu district, read-only, audit log",
        ),
    ]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT user_unit_id FROM sites WHERE id = %s", (world.site_ids[0],))
        ).fetchone()
        assert row is not None
        logins.append(
            ("safety", "safety_manager", {"user_unit_id": row[0]}, "Riverside Towers only")
        )
        manufacturer = await (await conn.execute("SELECT min(id) FROM manufacturers")).fetchone()
        assert manufacturer is not None
        logins.append(
            ("maker", "manufacturer", {"manufacturer_id": manufacturer[0]}, "the lifts it built")
        )
        for username, role, scope, sees in logins:
            await auth.create_user(
                conn,
                username=username,
                password=DEMO_PASSWORD,
                role=role,
                display_name=username,
                **scope,
            )
            world.logins[username] = f"{role}: {sees}"
        await conn.execute(
            "INSERT INTO technician_assignments (technician_id, device_id) "
            "SELECT %s, id FROM devices WHERE site_id = %s AND kind = 'elevator'",
            (first_tech, world.site_ids[0]),
        )
    return world.logins
