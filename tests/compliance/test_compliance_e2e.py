"""End to end on an accelerated clock: simulator → gateway → broker → ingest → database →
compliance engine → broker → gateway → simulator (rules M3, M5, M6).

An elevator whose maintenance has lapsed raises the overdue alarm, and after the grace period
the engine sends a lockout. The controller holds it pending while somebody is in the car, then
applies it at a landing with the doors open. A simulated technician's visit (inspection mode,
car-top and pit stations) and its record verify, and the engine releases the lift.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from compliance.log import flows as log_flows
from compliance.maintenance import flows, service
from compliance.maintenance.models import Tier, Verdict, checklist
from fleet.factory import FleetFactory
from gateway.models import (
    BrokerConfig,
    DeviceConfig,
    GatewayConfig,
    PollingDefaults,
    build_config,
)
from gateway.service import GatewayService
from ingest.worker import run_ingest
from runtime import engine
from simulators.elevator import Elevator
from simulators.testing import FleetRunner
from vigil import notify
from vigil.catalog import DoorState, LockoutState
from vigil.clock import AcceleratedClock
from vigil.config import ComplianceSettings, IngestSettings, Settings

FACTOR = 600.0  # ten simulated minutes per real second
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
LIFT = "lift-e2e"


def _estate(conn: psycopg.Connection, *, gateway: str) -> int:
    """A site in Shanghai whose lift has had no maintenance for 20 days; grace 1 h."""
    registry = FleetFactory(conn, at=START)
    jurisdiction = registry.jurisdiction("sh", name="SH", grace_hours=1)
    site = registry.site(
        user_unit=registry.user_unit("Tower"),
        jurisdiction=jurisdiction,
        name="Tower",
        latitude=31.2,
        longitude=121.5,
    )
    firm = registry.firm("LiftCare", licence_no="L-1", licence_expires_on=date(2030, 1, 1))
    technician = registry.technician(
        firm=firm, name="Wang", certificate_no="C-1", certificate_expires_on=date(2030, 1, 1)
    )
    registry.gateway(gateway, site=site)
    registry.device(
        LIFT, site=site, firm=firm, gateway=gateway, registered_at=START - timedelta(days=20)
    )
    return technician


def _pending_with_somebody_inside(conn: psycopg.Connection) -> int:
    """Lockout reports (pending or applied) made while the car reported a passenger inside."""
    row = conn.execute(
        """
        SELECT count(*) AS n FROM events e
        WHERE e.device_id = %(d)s AND e.metric = 'lockout_state' AND e.value > 0
          AND (SELECT p.value FROM events p
               WHERE p.device_id = e.device_id AND p.metric = 'passengers' AND p.ts <= e.ts
               ORDER BY p.ts DESC LIMIT 1) = 1
        """,
        {"d": LIFT},
    ).fetchone()
    return int(row["n"])


async def _until(listener: notify.Listener, match, *, timeout: float = 60.0):
    """The first notice for which ``match`` is true."""

    async def first():
        async for notice in listener:
            if match(notice):
                return notice
        return None

    return await asyncio.wait_for(first(), timeout)


async def _until_all(listener: notify.Listener, *matches, timeout: float = 60.0) -> None:
    """Until every one of ``matches`` has matched a notice, in whatever order they come: the
    controller's report and the engine's decision travel separately (the engine may record the
    lockout from the command result before the lockout_state event is announced)."""
    waiting = list(matches)

    async def every():
        async for notice in listener:
            waiting[:] = [match for match in waiting if not match(notice)]
            if not waiting:
                return

    await asyncio.wait_for(every(), timeout)


def _escalated(state: str):
    return lambda n: isinstance(n, dict) and n.get("device") == LIFT and n.get("state") == state


def _event(metric: str, value: float, previous: float | None = None):
    def match(n: object) -> bool:
        return (
            isinstance(n, notify.EventNotice)
            and n.device == LIFT
            and n.metric == metric
            and n.value == value
            and (previous is None or n.previous == previous)
        )

    return match


async def test_a_lapsed_lift_is_locked_out_at_a_landing_and_a_verified_visit_releases_it(
    db_url, mqtt_url, tmp_path, unique_id, resources_for
):
    clock = AcceleratedClock(factor=FACTOR, start=START)
    gateway_id = f"gw-{unique_id}"
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        technician = _estate(conn, gateway=gateway_id)

        lift = Elevator(device_id=LIFT, clock=clock, highest=8)
        with FleetRunner([lift]) as fleet:
            placement = fleet.placement(LIFT)
            config = build_config(
                GatewayConfig(
                    gateway_id=gateway_id,
                    data_dir=tmp_path / "gateway",
                    broker=BrokerConfig(url=mqtt_url, backoff_initial_s=0.5, backoff_max_s=2.0),
                    polling=PollingDefaults(poll_s=30.0, timeout_s=1.0),
                    devices=[
                        DeviceConfig(
                            id=LIFT,
                            profile=placement.model,
                            host=placement.host,
                            port=placement.port,
                            unit=placement.unit,
                        )
                    ],
                )
            )
            ingest_settings = IngestSettings(
                client_id=f"ingest-{unique_id}", share_group=f"e2e{unique_id}", session_expiry_s=0
            )
            settings = Settings(
                data_dir=tmp_path,
                compliance=ComplianceSettings(sweep_interval_s=300.0),
            )
            ingest_stop = threading.Event()
            ingest = threading.Thread(
                target=run_ingest,
                kwargs={
                    "database_url": db_url,
                    "mqtt_url": mqtt_url,
                    "settings": ingest_settings,
                    "clock": clock,
                    "stop_event": ingest_stop,
                },
            )
            stop = asyncio.Event()
            channels = [notify.ESCALATIONS, notify.EVENTS]
            async with (
                notify.Listener(db_url, channels) as listener,
                resources_for(settings=settings, clock=clock) as resources,
            ):
                ingest.start()
                gateway = asyncio.create_task(
                    GatewayService(config=config, clock=clock, stagger=False).run(stop)
                )
                compliance = asyncio.create_task(
                    engine.run(
                        resources=resources,
                        stop=stop,
                        modules=("compliance.maintenance.scheduled",),
                    )
                )
                try:
                    # Somebody is in the car when the lockout is decided (rule M6: never trap).
                    fleet.call(lift.set_occupied, True)
                    await _until(listener, _escalated("overdue"))
                    await _until(listener, _escalated("lockout_pending"))
                    state = service.escalation(conn, device_id=LIFT)
                    assert state is not None and state["state"] == "lockout_pending"
                    # the platform sees the passenger and holds the command back
                    assert fleet.call(lambda: lift.lockout_state) is LockoutState.NONE

                    # The passenger leaves: the platform sees an idle, empty car at a landing,
                    # sends the lockout, and the controller opens its doors and applies it.
                    fleet.call(lift.set_occupied, False)
                    await _until_all(
                        listener,
                        _event("lockout_state", LockoutState.APPLIED),
                        _escalated("locked_out"),
                    )
                    applied = fleet.call(
                        lambda: (
                            lift.lockout_state,
                            lift.in_door_zone,
                            lift.door_state,
                            lift.moving,
                            lift.passengers,
                        )
                    )
                    assert applied == (LockoutState.APPLIED, True, DoorState.OPEN, False, False)
                    # the controller never held a lockout with somebody inside
                    assert _pending_with_somebody_inside(conn) == 0

                    # The technician comes: 40 minutes of inspection operation, car top and pit.
                    visit_start = clock.now()
                    fleet.call(lift.maintenance_visit, duration_s=2400.0)
                    await _until(listener, _event("car_top_inspection", 1))
                    await _until(listener, _event("pit_inspection", 0, previous=1))
                    _, judgement = flows.submit_record(
                        conn,
                        device_id=LIFT,
                        technician_id=technician,
                        tier=Tier.HALF_MONTHLY,
                        claimed_start=visit_start - timedelta(minutes=5),
                        claimed_end=clock.now(),
                        checklist_done=checklist(Tier.HALF_MONTHLY),
                        recorded_by="wang",
                        at=clock.now(),
                    )
                    assert judgement is not None and judgement.verdict is Verdict.VERIFIED
                    await _until_all(
                        listener, _escalated("ok"), _event("lockout_state", LockoutState.NONE)
                    )
                    assert fleet.call(lambda: lift.lockout_state) is LockoutState.NONE
                finally:
                    stop.set()
                    ingest_stop.set()
                    # asyncio.wait, not wait_for: on Python 3.11 wait_for blocks until a
                    # cancelled task ends, so one stuck task would hang the test past its timeout
                    # the gateway itself gives its broker link up to 30 s to say goodbye
                    ended, stuck = await asyncio.wait({gateway, compliance}, timeout=60)
                    for task in stuck:
                        task.cancel()
                    assert not stuck, f"did not stop within 60 s: {stuck}"
                    for task in ended:
                        task.exception()  # retrieved: a failure shows in the assertions below
                    await asyncio.to_thread(ingest.join, 30)

        actions = [
            (r["action"], r["outcome"])
            for r in conn.execute(
                "SELECT c.action, r.outcome FROM commands c "
                "LEFT JOIN command_results r ON r.command_id = c.id ORDER BY c.issued_at, r.ts"
            ).fetchall()
        ]
        assert ("lockout", "done") in actions
        assert ("release", "done") in actions
        assert log_flows.verify(conn).ok
