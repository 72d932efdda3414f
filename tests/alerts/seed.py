"""Small fixtures of parties and assets for the alerts and rescue tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
from psycopg.rows import tuple_row


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
    cur = conn.cursor(row_factory=tuple_row)
    jurisdiction_id = cur.execute(
        "INSERT INTO jurisdictions (code, name, rescue_clock_from) VALUES ('sh', 'Shanghai', %s) "
        "RETURNING id",
        (clock_from,),
    ).fetchone()[0]
    unit_id = cur.execute(
        "INSERT INTO user_units (name) VALUES ('Harbour Tower Ltd') RETURNING id"
    ).fetchone()[0]
    city_site = cur.execute(
        "INSERT INTO sites (user_unit_id, jurisdiction_id, name, latitude, longitude, tier) "
        "VALUES (%s, %s, 'Harbour Tower', 31.2300, 121.4700, 'city') RETURNING id",
        (unit_id, jurisdiction_id),
    ).fetchone()[0]
    rural_site = cur.execute(
        "INSERT INTO sites (user_unit_id, jurisdiction_id, name, latitude, longitude, tier) "
        "VALUES (%s, %s, 'Hill Annex', 31.0000, 121.0000, 'elsewhere') RETURNING id",
        (unit_id, jurisdiction_id),
    ).fetchone()[0]
    firm_id = cur.execute(
        "INSERT INTO maintenance_firms (name, licence_no, licence_expires_on) "
        "VALUES ('Lift Care', 'LIC-1', %s) RETURNING id",
        (licence_expires,),
    ).fetchone()[0]
    maker_id = cur.execute(
        "INSERT INTO manufacturers (name) VALUES ('Otis-like') RETURNING id"
    ).fetchone()[0]
    for device, site in (("lift-city", city_site), ("lift-rural", rural_site)):
        cur.execute(
            "INSERT INTO devices (id, kind, model, site_id, firm_id, manufacturer_id) "
            "VALUES (%s, 'elevator', 'traction', %s, %s, %s)",
            (device, site, firm_id, maker_id),
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
    cur = conn.cursor(row_factory=tuple_row)
    return cur.execute(
        "INSERT INTO technicians (firm_id, name, certificate_no, certificate_expires_on, "
        "home_latitude, home_longitude) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (firm_id, name, f"CERT-{name}", certificate_expires, latitude, longitude),
    ).fetchone()[0]


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
