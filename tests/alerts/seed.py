"""Small fixtures of parties and assets for the alerts and rescue tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from fleet.factory import FleetFactory

# when the seeded world was registered: before any test's clock starts
_REGISTERED = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    """Ids of what ``seed`` created."""

    jurisdiction_id: int
    user_unit_id: int
    city_site_id: int
    rural_site_id: int
    firm_id: int
    manufacturer_id: int
    city_lift: str
    rural_lift: str


def seed(
    conn: psycopg.Connection,
    *,
    clock_from: str = "report",
    licence_expires: date = date(2030, 1, 1),
) -> World:
    """One jurisdiction, a user unit with a city and an elsewhere site, a firm, two lifts."""
    fleet = FleetFactory(conn, at=_REGISTERED)
    jurisdiction_id = fleet.jurisdiction("sh", name="Shanghai", rescue_clock_from=clock_from)
    unit_id = fleet.user_unit("Harbour Tower Ltd")
    city_site = fleet.site(
        user_unit=unit_id,
        jurisdiction=jurisdiction_id,
        name="Harbour Tower",
        latitude=31.23,
        longitude=121.47,
        tier="city",
    )
    rural_site = fleet.site(
        user_unit=unit_id,
        jurisdiction=jurisdiction_id,
        name="Hill Annex",
        latitude=31.0,
        longitude=121.0,
        tier="elsewhere",
    )
    firm_id = fleet.firm("Lift Care", licence_no="LIC-1", licence_expires_on=licence_expires)
    maker_id = fleet.manufacturer("Otis-like")
    for device, site in (("lift-city", city_site), ("lift-rural", rural_site)):
        # under contract for as long as any test's clock runs
        fleet.device(
            device,
            site=site,
            model="traction",
            manufacturer=maker_id,
            firm=firm_id,
            contract_from=_REGISTERED.date(),
            contract_days=40 * 365,
        )
    return World(
        jurisdiction_id=jurisdiction_id,
        user_unit_id=unit_id,
        city_site_id=city_site,
        rural_site_id=rural_site,
        firm_id=firm_id,
        manufacturer_id=maker_id,
        city_lift="lift-city",
        rural_lift="lift-rural",
    )


def registry(conn: psycopg.Connection) -> FleetFactory:
    """The fleet factory of these tests' worlds."""
    return FleetFactory(conn, at=_REGISTERED)


def add_lift(conn: psycopg.Connection, *, world: World, device_id: str, **fields: object) -> str:
    """One more elevator of the world's firm at its city site (under its contract)."""
    fields.setdefault("site", world.city_site_id)
    fields.setdefault("model", "traction")
    return registry(conn).device(
        device_id,
        firm=world.firm_id,
        contract_from=_REGISTERED.date(),
        contract_days=40 * 365,
        **fields,
    )


def add_technician(
    conn: psycopg.Connection,
    *,
    firm_id: int,
    name: str,
    latitude: float,
    longitude: float,
    certificate_expires: date = date(2030, 1, 1),
) -> int:
    """A technician of the firm living at the given place."""
    return FleetFactory(conn, at=_REGISTERED).technician(
        firm=firm_id,
        name=name,
        certificate_no=f"CERT-{name}",
        certificate_expires_on=certificate_expires,
        home_latitude=latitude,
        home_longitude=longitude,
    )


def cover_roster(conn: psycopg.Connection, *, world: World, start: datetime, days: int = 7) -> int:
    """Put one technician of the firm on call for ``days`` from ``start``; returns its id."""
    from alerts import service

    technician = add_technician(
        conn, firm_id=world.firm_id, name="on-call", latitude=31.23, longitude=121.47
    )
    roster = service.create_roster(conn, firm_id=world.firm_id, name="24h")
    service.add_shift(
        conn,
        roster_id=roster,
        technician_id=technician,
        start=start - timedelta(days=1),
        end=start + timedelta(days=days),
    )
    return technician
