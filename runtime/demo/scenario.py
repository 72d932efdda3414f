"""The demo's scenario, on the demo clock: an entrapment and its rescue, a lapsed maintenance
going to lockout and released by a verified visit, a door fault turned into a work order that is
assigned, resolved, called back and closed, and a lamp failure after dusk.

A scripted technician plays the field side: accepts the dispatch, checks in at the site, frees
the passengers, and performs the maintenance visit. Everything else (detection, dispatch,
deadlines, escalation, lockout, verification) is the product reacting to what the devices show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runtime.demo.seed import LAPSING_ELEVATOR
from simulators.models import Fault, SimulatedDevice
from vigil.clock import Clock

log = logging.getLogger("runtime.demo")

FIRST_ENTRAPMENT = "lift-0001"
SECOND_ENTRAPMENT = "lift-0002"
FAILING_LAMP = "pole-0001"
FAULTY_DOORS = "lift-0005"  # a door-close fault becomes a work order (rules S1, S4)


class Scenario:
    """Scripted events at simulated times after ``start``."""

    def __init__(
        self,
        *,
        database_url: str,
        clock: Clock,
        start: datetime,
        devices: dict[str, SimulatedDevice],
        say: Callable[[str], None],
        leave_second_entrapment: bool,
    ) -> None:
        self.database_url = database_url
        self.clock = clock
        self.start = start
        self.devices = devices
        self.say = say
        self.leave_second_entrapment = leave_second_entrapment

    async def run(self) -> None:
        """Play every storyline concurrently."""
        storylines = [self.rescue(FIRST_ENTRAPMENT, after=timedelta(minutes=3))]
        storylines.append(self.lapse_and_release(LAPSING_ELEVATOR))
        if FAULTY_DOORS in self.devices:
            storylines.append(self.fault_repair(FAULTY_DOORS, after=timedelta(minutes=8)))
        if FAILING_LAMP in self.devices:
            storylines.append(self.lamp_failure(FAILING_LAMP, after=timedelta(minutes=5)))
        if SECOND_ENTRAPMENT in self.devices:
            storylines.append(
                self.rescue(
                    SECOND_ENTRAPMENT,
                    after=timedelta(minutes=40),
                    at_floor=True,
                    scripted=not self.leave_second_entrapment,
                )
            )
        await asyncio.gather(*storylines)

    async def _at(self, after: timedelta) -> None:
        await self.clock.sleep_until(self.start + after)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def _until(self, what: str, sql: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """Check every simulated minute until ``sql`` returns a row (the technician's patience)."""
        while True:
            rows = await self._query(sql, params)
            if rows:
                return rows[0]
            await self.clock.sleep(60)

    # -- rescue (rules R1-R6) -------------------------------------------------------------------

    async def rescue(
        self,
        device_id: str,
        *,
        after: timedelta,
        at_floor: bool = False,
        scripted: bool = True,
    ) -> None:
        """Trap passengers in ``device_id``; a scripted technician rescues them (or you do)."""
        await self._at(after)
        car = self.devices[device_id]
        fault = Fault.ENTRAPMENT_AT_FLOOR if at_floor else Fault.ENTRAPMENT_BETWEEN_FLOORS
        car.inject(fault)
        where = "at a floor, doors not opening" if at_floor else "between floors"
        self.say(f"{device_id}: passengers trapped {where}")
        incident = await self._until(
            "incident",
            "SELECT id, arrival_deadline FROM rescue_incidents "
            "WHERE device_id = %s AND closed_at IS NULL",
            (device_id,),
        )
        deadline = incident["arrival_deadline"]
        self.say(f"{device_id}: incident {incident['id']} opened, arrival due by {deadline:%H:%M}")
        if not scripted:
            self.say(f"{device_id}: incident {incident['id']} is yours: log in as 'dispatcher'")
            # once your technician is on site they free the passengers; the platform sees the
            # car freed, and only then lets you release and close (rule R6)
            await self._until(
                "the technician on site",
                "SELECT 1 FROM rescue_steps WHERE incident_id = %s AND step = 'arrived'",
                (incident["id"],),
            )
            car.clear(fault)
            self.say(f"{device_id}: the technician freed the passengers: release and close it")
            return
        await self._field_rescue(device_id, incident_id=incident["id"], car=car, fault=fault)

    async def _field_rescue(
        self, device_id: str, *, incident_id: int, car: SimulatedDevice, fault: Fault
    ) -> None:
        from compliance.rescue import flows as rescue

        technician = await self._accept(incident_id)
        self.say(f"{device_id}: technician {technician} accepted, on the way")
        await self.clock.sleep(12 * 60)
        site = (
            await self._query(
                "SELECT s.latitude, s.longitude FROM devices d JOIN sites s ON s.id = d.site_id "
                "WHERE d.id = %s",
                (device_id,),
            )
        )[0]
        await self._write(
            lambda conn: rescue.check_in(
                conn,
                technician_id=technician,
                device_id=device_id,
                at=self.clock.now(),
                latitude=site["latitude"],
                longitude=site["longitude"],
            )
        )
        self.say(f"{device_id}: technician {technician} checked in on site")
        await self.clock.sleep(6 * 60)
        car.clear(fault)
        # rule R6: the platform releases only once its own data shows nobody trapped
        await self._until(
            "the car freed",
            "SELECT 1 FROM device_state p WHERE p.device_id = %s AND p.metric = 'passengers' "
            "AND p.value = 0 AND NOT EXISTS (SELECT 1 FROM device_state f "
            "WHERE f.device_id = p.device_id AND f.metric = 'fault_code' AND f.value <> 0)",
            (device_id,),
        )
        await self._write(
            lambda conn: rescue.release(
                conn, incident_id=incident_id, at=self.clock.now(), actor=f"technician:{technician}"
            )
        )
        self.say(f"{device_id}: passengers released")
        await self.clock.sleep(5 * 60)
        await self._write(
            lambda conn: rescue.close(
                conn, incident_id=incident_id, at=self.clock.now(), actor=f"technician:{technician}"
            )
        )
        self.say(f"{device_id}: incident {incident_id} closed")

    async def _accept(self, incident_id: int) -> int:
        """The dispatched technician accepts after half a minute; a later one if it moved on."""
        from compliance.rescue import flows as rescue
        from compliance.rescue.models import RescueError

        while True:
            dispatch = await self._until(
                "dispatch",
                "SELECT technician_id FROM rescue_dispatches WHERE incident_id = %s "
                "AND outcome IS NULL ORDER BY id DESC LIMIT 1",
                (incident_id,),
            )
            await self.clock.sleep(30)
            technician = dispatch["technician_id"]
            try:
                await self._write(
                    lambda conn, who=technician: rescue.accept(
                        conn, incident_id=incident_id, technician_id=who, at=self.clock.now()
                    )
                )
            except RescueError as exc:
                log.info("scripted technician %s could not accept: %s", technician, exc)
                continue
            return int(technician)

    async def _write(self, action: Callable[[psycopg.Connection], object]) -> None:
        def run() -> None:
            with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
                action(conn)
                conn.commit()

        await asyncio.to_thread(run)

    # -- maintenance lapse → lockout → verified visit (rules M1, M3, M5, M6) ---------------------

    async def lapse_and_release(self, device_id: str) -> None:
        """Wait for the lapsed elevator's lockout, then do a real visit and record it."""
        from compliance.maintenance import flows as maintenance
        from compliance.maintenance.models import Tier, checklist

        await self._until(
            "overdue",
            "SELECT 1 FROM maintenance_escalations WHERE device_id = %s AND state = 'overdue'",
            (device_id,),
        )
        self.say(f"{device_id}: maintenance overdue, alarm raised (lockout after the grace period)")
        await self._until(
            "locked out",
            "SELECT 1 FROM maintenance_escalations WHERE device_id = %s AND state = 'locked_out'",
            (device_id,),
        )
        self.say(f"{device_id}: locked out at a landing, doors open, car empty")
        await self.clock.sleep(10 * 60)
        technician = (await self._query("SELECT min(id) AS id FROM technicians WHERE active", ()))[
            0
        ]["id"]
        visit_start = self.clock.now()
        self.devices[device_id].maintenance_visit(duration_s=25 * 60)
        self.say(f"{device_id}: technician on site, inspection mode, car top and pit")
        await self.clock.sleep(27 * 60)
        visit_end = visit_start + timedelta(minutes=25)
        await self._write(
            lambda conn: maintenance.submit_record(
                conn,
                device_id=device_id,
                technician_id=technician,
                tier=Tier.HALF_MONTHLY,
                claimed_start=visit_start,
                claimed_end=visit_end,
                checklist_done=checklist(Tier.HALF_MONTHLY),
                recorded_by=f"technician:{technician}",
                at=self.clock.now(),
            )
        )
        self.say(f"{device_id}: maintenance record submitted")
        await self._until(
            "released",
            "SELECT 1 FROM maintenance_escalations WHERE device_id = %s AND state = 'ok'",
            (device_id,),
        )
        self.say(f"{device_id}: visit verified by telemetry, lockout released")

    # -- a fault becomes a work order (rules S1, S2, S4) -----------------------------------------

    async def fault_repair(self, device_id: str, *, after: timedelta) -> None:
        """The doors stop closing: the platform opens a work order with its deadlines; the
        firm's dispatcher assigns it, the technician fixes it, the customer is called back."""
        from workorders import flows as work

        await self._at(after)
        car = self.devices[device_id]
        car.inject(Fault.DOOR_FAULT)
        self.say(f"{device_id}: the doors stopped closing (controller fault 2)")
        order = await self._until(
            "work order",
            "SELECT id, level, respond_by, on_site_by, restore_by FROM work_orders "
            "WHERE device_id = %s AND kind = 'fault_repair' AND status = 'opened'",
            (device_id,),
        )
        order_id = order["id"]
        self.say(
            f"{device_id}: work order {order_id} opened, level {order['level']}: respond by "
            f"{order['respond_by']:%H:%M}, on site by {order['on_site_by']:%H:%M}, "
            f"restored by {order['restore_by']:%H:%M}"
        )
        await self.clock.sleep(3 * 60)
        place = (
            await self._query(
                "SELECT t.id AS technician, s.latitude, s.longitude FROM devices d "
                "JOIN sites s ON s.id = d.site_id JOIN technicians t ON t.firm_id = d.firm_id "
                "WHERE d.id = %s AND t.active ORDER BY t.id LIMIT 1",
                (device_id,),
            )
        )[0]
        technician = place["technician"]
        await self._write(
            lambda conn: work.assign(
                conn,
                work_order_id=order_id,
                technician_id=technician,
                at=self.clock.now(),
                actor="dispatcher",
            )
        )
        self.say(f"{device_id}: work order {order_id} assigned to technician {technician}")
        await self.clock.sleep(60)
        await self._write(
            lambda conn: work.accept(
                conn, work_order_id=order_id, technician_id=technician, at=self.clock.now()
            )
        )
        await self.clock.sleep(25 * 60)
        await self._write(
            lambda conn: work.check_in(
                conn,
                work_order_id=order_id,
                technician_id=technician,
                at=self.clock.now(),
                latitude=place["latitude"],
                longitude=place["longitude"],
            )
        )
        self.say(f"{device_id}: technician {technician} on site")
        await self.clock.sleep(20 * 60)
        car.clear(Fault.DOOR_FAULT)
        await self._write(
            lambda conn: work.resolve(
                conn,
                work_order_id=order_id,
                at=self.clock.now(),
                actor=f"technician:{technician}",
                note="door operator belt replaced",
            )
        )
        self.say(f"{device_id}: work order {order_id} resolved; the customer is called back")
        await self.clock.sleep(30 * 60)
        await self._write(
            lambda conn: work.callback(
                conn,
                work_order_id=order_id,
                at=self.clock.now(),
                actor="dispatcher",
                reached=True,
                satisfaction=5,
                note="the safety manager confirms the doors work",
            )
        )
        self.say(f"{device_id}: callback reached the customer (satisfaction 5): work order closed")

    # -- street lighting (rule L1) --------------------------------------------------------------

    async def lamp_failure(self, device_id: str, *, after: timedelta) -> None:
        """A lamp fails after dusk: lit by schedule but drawing no power."""
        await self._at(after)
        self.devices[device_id].inject(Fault.LAMP_FAILURE)
        self.say(f"{device_id}: lamp failed (lit by schedule, drawing no power)")
