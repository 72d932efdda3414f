"""Fixtures of the work-order tests: a firm with its technicians, a city and a province site,
and devices of each kind under contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg
import pytest

from fleet.factory import FleetFactory
from workorders.models import Kind, Level, Origin, Source


@dataclass
class World:
    """Ids of what the tests work with."""

    conn: psycopg.Connection
    fleet: FleetFactory
    jurisdiction_id: int
    firm_id: int
    other_firm_id: int
    technician_id: int
    expired_technician_id: int
    other_technician_id: int
    city_site_id: int
    province_site_id: int
    lift: str  # an elevator in the city
    far_lift: str  # an elevator in the province
    pole: str  # a street-light pole in the city
    meter: str  # an energy meter in the city


@pytest.fixture
def world(db, clock) -> World:
    make = FleetFactory(db, at=clock.now())
    jurisdiction = make.jurisdiction("sh")
    unit = make.user_unit("Tower owner")
    city = make.site(user_unit=unit, jurisdiction=jurisdiction, tier="city")
    province = make.site(
        user_unit=unit, jurisdiction=jurisdiction, tier="elsewhere", latitude=30.0, longitude=120.0
    )
    firm = make.firm("Lift care")
    other = make.firm("Other care")
    technician = make.technician(firm=firm)
    expired = make.technician(firm=firm, certificate_expires_on=date(2020, 1, 1))
    stranger = make.technician(firm=other)
    lift = make.device("lift-1", site=city, firm=firm)
    far_lift = make.device("lift-far", site=province, firm=firm)
    pole = make.device("pole-1", site=city, kind="light_pole", firm=firm)
    meter = make.device("meter-1", site=city, kind="energy_meter", firm=firm)
    for device in (lift, far_lift, pole, meter):
        make.assign(technician=technician, device=device)
    return World(
        conn=db,
        fleet=make,
        jurisdiction_id=jurisdiction,
        firm_id=firm,
        other_firm_id=other,
        technician_id=technician,
        expired_technician_id=expired,
        other_technician_id=stranger,
        city_site_id=city,
        province_site_id=province,
        lift=lift,
        far_lift=far_lift,
        pole=pole,
        meter=meter,
    )


def patrol(
    device_id: str, *, level: Level = Level.GENERAL, cause: str = "patrol-finding"
) -> Source:
    """Work a patrol found (opened by hand)."""
    return Source(
        device_id=device_id,
        kind=Kind.FAULT_REPAIR,
        cause=cause,
        level=level,
        origin=Origin.PATROL,
        source_ref=None,
        title="found on patrol",
        details={},
    )


from tests.api.conftest import client, fleet  # noqa: E402, F401 - the API's fixtures
