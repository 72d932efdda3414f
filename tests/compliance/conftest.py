"""Fixtures of the compliance tests: a small estate of elevators and helpers to write events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
import pytest

from compliance.maintenance import flows
from compliance.maintenance.models import Part, Tier, checklist
from fleet.factory import FleetFactory
from vigil.catalog import ServiceMode

# idle at a landing, doors open, empty: the only state a lockout may be applied in (rule M6)
PARKED = {"car_status": 0.0, "door_zone": 1.0, "door_state": 2.0, "passengers": 0.0}


@dataclass
class Estate:
    """Ids of the parties and assets a test works with."""

    conn: psycopg.Connection
    jurisdiction_id: int
    user_unit_id: int
    site_id: int
    firm_id: int
    technician_id: int
    manufacturer_id: int
    gateway: str
    registered_at: datetime
    fleet: FleetFactory

    def add_elevator(self, device_id: str, *, registered_at: datetime | None = None) -> str:
        """Register one more elevator at the site, under the firm's contract."""
        self.fleet.device(
            device_id,
            site=self.site_id,
            firm=self.firm_id,
            manufacturer=self.manufacturer_id,
            gateway=self.gateway,
            model="TL-1000",
            registered_at=registered_at or self.registered_at,
        )
        # a monitored lift: parked at a landing, doors open, nobody inside (rule M6 reads it)
        self.car(device_id, registered_at or self.registered_at, **PARKED)
        return device_id

    def car(self, device_id: str, ts: datetime, **metrics: float) -> None:
        """Set the latest state of the car as ingest would (device_state)."""
        for metric, value in metrics.items():
            self.conn.execute(
                "INSERT INTO device_state (device_id, metric, value, ts) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (device_id, metric) DO UPDATE SET value = EXCLUDED.value, "
                "ts = EXCLUDED.ts",
                (device_id, metric, value, ts),
            )

    def event(self, device_id: str, metric: str, ts: datetime, value: float) -> int:
        """Store one event as ingest would."""
        row = self.conn.execute(
            "INSERT INTO events (device_id, metric, ts, value) VALUES (%s, %s, %s, %s) "
            "RETURNING id",
            (device_id, metric, ts, value),
        ).fetchone()
        return row["id"]

    def visit(
        self,
        device_id: str,
        start: datetime,
        *,
        minutes: float = 45,
        car_top: bool = True,
        pit: bool = True,
    ) -> tuple[datetime, datetime]:
        """Events of a technician's visit: inspection mode, car-top and pit stations used."""
        end = start + timedelta(minutes=minutes)
        self.event(device_id, "service_mode", start, ServiceMode.INSPECTION)
        if car_top:
            self.event(device_id, "car_top_inspection", start + timedelta(minutes=1), 1)
            self.event(device_id, "car_top_inspection", start + timedelta(minutes=2), 0)
        if pit:
            self.event(device_id, "pit_inspection", start + timedelta(minutes=3), 1)
            self.event(device_id, "pit_inspection", start + timedelta(minutes=4), 0)
        self.event(device_id, "service_mode", end, ServiceMode.NORMAL)
        return start, end

    def record(
        self,
        device_id: str,
        start: datetime,
        end: datetime,
        *,
        at: datetime,
        tier: Tier = Tier.HALF_MONTHLY,
        items: list[str] | None = None,
        parts: tuple[Part, ...] = (),
        **kwargs: object,
    ):
        """Submit a maintenance record with the full checklist of its tier."""
        return flows.submit_record(
            self.conn,
            device_id=device_id,
            technician_id=self.technician_id,
            tier=tier,
            claimed_start=start,
            claimed_end=end,
            checklist_done=checklist(tier) if items is None else items,
            parts=parts,
            recorded_by="tech-1",
            at=at,
            **kwargs,
        )


@pytest.fixture
def estate(db, clock, unique_id) -> Estate:
    """One jurisdiction, user unit, site (Asia/Shanghai), firm, technician and gateway."""
    fleet = FleetFactory(db, at=clock.now())
    j = fleet.jurisdiction("sh", name="Shanghai")
    u = fleet.user_unit("Tower A")
    fleet.safety_manager(user_unit=u, name="Ms Li")
    s = fleet.site(user_unit=u, jurisdiction=j, name="Tower A", latitude=31.2, longitude=121.5)
    f = fleet.firm("LiftCare", licence_no="LIC-1", licence_expires_on=date(2030, 1, 1))
    t = fleet.technician(
        firm=f, name="Wang", certificate_no="CERT-1", certificate_expires_on=date(2030, 1, 1)
    )
    m = fleet.manufacturer("Otis")
    gateway = fleet.gateway(f"gw-{unique_id}", site=s)  # unique: tests share one broker
    estate = Estate(db, j, u, s, f, t, m, gateway, clock.now() - timedelta(days=1), fleet)
    estate.add_elevator("lift-1")
    return estate
