"""Technicians, rosters and contacts around the seeded sites."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg

from alerts import service as alerts
from tests.alerts.seed import World, add_technician


@dataclass(frozen=True)
class Crew:
    """Ids of the technicians ``crew`` created."""

    near: int  # about 1 km from the city site, on call
    far: int  # about 5 km away, on call
    expired: int  # closest on call, but the certificate has expired (rule M10)
    off_duty: int  # closest of all, not on call (rule R3)


def crew(
    conn: psycopg.Connection,
    *,
    world: World,
    start: datetime,
    hook: str | None = None,
    far_away: bool = False,
) -> Crew:
    """Four technicians of the firm; contacts for every rescue audience on ``hook`` paths."""
    offset = 0.9 if far_away else 0.0  # ~100 km north: nobody can make a deadline
    near = add_technician(
        conn, firm_id=world.firm_id, name="near", latitude=31.239 + offset, longitude=121.47
    )
    far = add_technician(
        conn, firm_id=world.firm_id, name="far", latitude=31.275 + offset, longitude=121.47
    )
    expired = add_technician(
        conn,
        firm_id=world.firm_id,
        name="expired",
        latitude=31.235,
        longitude=121.47,
        certificate_expires=date(2020, 1, 1),
    )
    off_duty = add_technician(
        conn, firm_id=world.firm_id, name="off-duty", latitude=31.231, longitude=121.47
    )
    roster = alerts.create_roster(conn, firm_id=world.firm_id, name="24h")
    for technician in (near, far, expired):
        alerts.add_shift(
            conn,
            roster_id=roster,
            technician_id=technician,
            start=start - timedelta(hours=1),
            end=start + timedelta(days=2),
        )
    channel = "webhook" if hook else "console"
    for party_type, party_id, audience in (
        ("technician", near, "technician"),
        ("technician", far, "technician"),
        ("firm", world.firm_id, "firm"),
        ("firm", world.firm_id, "duty_manager"),
        ("firm", world.firm_id, "firm_manager"),
        ("user_unit", world.user_unit_id, "property_management"),
        ("jurisdiction", world.jurisdiction_id, "fire_service"),
    ):
        address = f"{hook}/{audience}/{party_id}" if hook else f"{audience}:{party_id}"
        alerts.add_contact(
            conn,
            party_type=party_type,
            party_id=party_id,
            audience=audience,
            channel=channel,
            address=address,
        )
    return Crew(near=near, far=far, expired=expired, off_duty=off_duty)
