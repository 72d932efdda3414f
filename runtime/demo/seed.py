"""The demo's world: jurisdictions, sites, a maintenance firm with its technicians and roster,
the simulated devices registered behind one gateway, contracts and demo logins.

The registry is written through the fleet domain's factory (fleet.factory), the alerts rosters
and contacts and the API users through their own domains' services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from fleet.factory import FleetFactory
from vigil.catalog import DeviceKind
from vigil.config import DemoSettings

DEMO_PASSWORD = "vigil-demo"
GATEWAY_ID = "gw-demo"
LAPSING_ELEVATOR = "lift-0003"  # registered 16 days ago: overdue from the start (rule M1)
DUE_SOON_ELEVATOR = "lift-0004"  # due in two days (rule M5 warning)
INSPECTION_DUE_ELEVATOR = "lift-0002"  # periodic inspection in 20 days (rule M12 warning)

# code, name, latitude, longitude, tier, jurisdiction code
_SITES = (
    ("riverside", "Riverside Towers", 31.2304, 121.4737, "city", "sh-huangpu"),
    ("century-park", "Century Park Plaza", 31.2155, 121.5450, "city", "sh-huangpu"),
    ("lakeside", "Lakeside Hospital", 31.3880, 120.9780, "elsewhere", "js-kunshan"),
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
    addresses: dict[str, tuple[str, int, int]],
    settings: DemoSettings,
) -> DemoWorld:
    """Create the demo's parties and register ``devices`` (id -> kind) behind the demo gateway,
    each at its Modbus address (host, port, unit)."""
    fleet = FleetFactory(conn, at=start)
    jurisdictions = {
        "sh-huangpu": fleet.jurisdiction(
            "sh-huangpu",
            name="Shanghai Huangpu District",
            default_tier="city",
            lockout_mode="enforce",
            # Every number of RULES.md is a default: the demo district shortens the lockout
            # grace period (rule M6) to one hour so the whole escalation fits in real minutes.
            grace_hours=1,
        ),
        "js-kunshan": fleet.jurisdiction(
            "js-kunshan", name="Kunshan County", default_tier="elsewhere", lockout_mode="recommend"
        ),
    }
    manufacturer = fleet.manufacturer("Huaxia Elevator Co.")
    firm = fleet.firm(
        "Shenglong Lift Service",
        licence_no="TS3131-2024-0042",
        licence_expires_on=(start + timedelta(days=800)).date(),
        duty_phone="+86 21 5555 0100",
    )
    _seed_depots(conn, firm=firm)
    sites: list[int] = []
    for n, (code, name, lat, lon, tier, where) in enumerate(_SITES[: settings.sites], start=1):
        unit = fleet.user_unit(f"{name} Property Management")
        sites.append(
            fleet.site(
                code=code,
                user_unit=unit,
                jurisdiction=jurisdictions[where],
                name=name,
                address=f"{n} Demo Road",
                latitude=lat,
                longitude=lon,
                tier=tier,
            )
        )
        fleet.safety_manager(
            user_unit=unit, name=f"Safety manager {n}", phone=f"+86 21 5555 02{n:02d}", site=code
        )
    technicians: dict[str, int] = {}
    for name, lat, lon, valid_days in _TECHNICIANS:
        technicians[name] = fleet.technician(
            firm=firm,
            name=name,
            phone="+86 139 0000 0000",
            certificate_no=f"T-{len(technicians) + 1:04d}",
            certificate_expires_on=(start + timedelta(days=valid_days)).date(),
            home_latitude=lat,
            home_longitude=lon,
            qualifications=["T1", "T2"],
        )
    fleet.gateway(GATEWAY_ID, site=sites[0], name="Demo edge gateway")
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
        host, port, unit = addresses[device_id]
        statutory = {}
        if elevator:
            inspection_in = 20 if device_id == INSPECTION_DUE_ELEVATOR else 90 + index * 7
            statutory = {
                "registration_code": f"梯11沪{index + 1:05d}",
                "next_inspection_due": (start + timedelta(days=inspection_in)).date(),
                "manufacturer": manufacturer,
            }
        fleet.device(
            device_id,
            site=site,
            kind=kind.value,
            model=_MODELS[kind],
            gateway=GATEWAY_ID,
            modbus_host=host,
            modbus_port=port,
            modbus_unit=unit,
            serial_no=f"SN-{index + 1:06d}",
            registered_at=registered,
            firm=firm if elevator else None,
            contract_from=registered.date(),
            contract_days=365 + (start.date() - registered.date()).days,
            **statutory,
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


def _seed_depots(conn: psycopg.Connection, *, firm: int) -> None:
    """Rule R8: the firm's depots, where its technicians start from."""
    from compliance.rescue import service as rescue
    from compliance.rescue.models import Place

    rescue.add_service_point(conn, firm_id=firm, name="Huangpu depot", place=Place(31.2250, 121.49))
    rescue.add_service_point(conn, firm_id=firm, name="Kunshan depot", place=Place(31.38, 120.97))


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
    with psycopg.connect(database_url) as conn:
        fleet = FleetFactory(conn, at=datetime.now().astimezone())
        for device_id, kind in world.devices.items():
            at_first_site = conn.execute(
                "SELECT site_id = %s FROM devices WHERE id = %s", (world.site_ids[0], device_id)
            ).fetchone()
            if kind == DeviceKind.ELEVATOR and at_first_site and at_first_site[0]:
                fleet.assign(technician=first_tech, device=device_id)
    return world.logins
