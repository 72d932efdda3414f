"""``vigil demo``: everything on one machine, on an accelerated clock. The composition root.

It starts (or uses the configured) PostgreSQL and Mosquitto, a simulated fleet of Modbus
devices, one edge gateway polling them, ingest, the compliance engine (maintenance, rescue,
alerts) and the API with its console, then plays the scenario in ``runtime.demo.scenario``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import threading
from datetime import UTC, datetime

import psycopg

from vigil.clock import AcceleratedClock
from vigil.config import Settings
from vigil.embedded import Endpoints, endpoints
from vigil.resources import open_resources
from vigil.services import free_port

log = logging.getLogger("runtime.demo")

DEMO_DATABASE = "vigil_demo"


def demo_start(*, today: datetime | None = None) -> datetime:
    """Simulated start: 17:30 in Shanghai today, so the street lights come on as it begins."""
    day = (today or datetime.now(UTC)).date()
    return datetime(day.year, day.month, day.day, 9, 30, tzinfo=UTC)


def run_demo(settings: Settings) -> int:
    """Run the demo until Ctrl-C; returns the exit code."""
    embedded = settings.database_url is None
    with endpoints(settings, database=DEMO_DATABASE, fresh=embedded) as where:
        return asyncio.run(_run(where, settings))


async def _run(where: Endpoints, settings: Settings) -> int:
    from fleet import service as fleet_service
    from gateway.models import (
        BrokerConfig,
        DeviceConfig,
        GatewayConfig,
        PollingDefaults,
        ReportStrategy,
        build_config,
    )
    from gateway.service import run_gateway
    from ingest.worker import run_ingest
    from runtime import engine
    from runtime.api import serve
    from runtime.demo.scenario import Scenario
    from runtime.demo.seed import DEMO_PASSWORD, GATEWAY_ID, seed_logins, seed_world
    from simulators.server import ModbusFleet, build_devices

    demo = settings.demo
    start = demo_start()
    clock = AcceleratedClock(factor=demo.factor, start=start)
    devices = build_devices(
        clock=clock,
        elevators=demo.elevators,
        meters=demo.meters,
        poles=demo.poles,
        masts=1,
        traffic_per_hour=12.0,
        seed=7,
    )
    by_id = {device.device_id: device for device in devices}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with (
        ModbusFleet(devices, host="127.0.0.1", units_per_port=50) as fleet,
        open_resources(
            database_url=where.database_url, mqtt_url=where.mqtt_url, clock=clock, settings=settings
        ) as resources,
    ):
        with psycopg.connect(where.database_url) as conn:
            world = seed_world(
                conn,
                start=start,
                devices={device.device_id: device.profile.kind for device in devices},
                addresses={p.device_id: (p.host, p.port, p.unit) for p in fleet.placements()},
                settings=demo,
            )
            conn.commit()
        logins = await seed_logins(where.database_url, world=world)
        with psycopg.connect(where.database_url) as conn:
            registered = fleet_service.gateway_devices(conn, gateway_id=GATEWAY_ID)

        gateway_dir = settings.data_dir.absolute() / "gateway"
        shutil.rmtree(gateway_dir, ignore_errors=True)  # a fresh demo replays no old buffer
        gateway = build_config(
            GatewayConfig(
                gateway_id=GATEWAY_ID,
                data_dir=gateway_dir,
                health_interval_s=300,
                broker=BrokerConfig(url=where.mqtt_url),
                # Simulated seconds: a poll every 10 s of demo time is one per second real time.
                polling=PollingDefaults(poll_s=demo.factor, timeout_s=1.0),
                # the registry's devices behind the gateway, as `vigil fleet gateway-config`
                devices=[
                    DeviceConfig(
                        id=device["id"],
                        profile=device["model"],
                        host=device["modbus_host"],
                        port=device["modbus_port"],
                        unit=device["modbus_unit"],
                        report=ReportStrategy.BOTH,
                        report_interval_s=300,
                    )
                    for device in registered
                ],
            )
        )
        ingest_stop = threading.Event()
        api_port = _port(settings.api.port)
        console_url: asyncio.Future[str] = loop.create_future()

        tasks = [
            asyncio.create_task(run_gateway(config=gateway, clock=clock, stop=stop), name="gw"),
            asyncio.create_task(
                asyncio.to_thread(
                    run_ingest,
                    database_url=where.database_url,
                    mqtt_url=where.mqtt_url,
                    settings=settings,
                    clock=clock,
                    stop_event=ingest_stop,
                ),
                name="ingest",
            ),
            asyncio.create_task(
                engine.run(resources=resources, stop=stop),
                name="compliance",
            ),
            asyncio.create_task(
                serve(
                    database_url=where.database_url,
                    clock=clock,
                    host=settings.api.host,
                    port=api_port,
                    started=console_url.set_result,
                ),
                name="api",
            ),
        ]
        url = await console_url
        _banner(where=where, url=url, logins=logins, password=DEMO_PASSWORD, settings=settings)
        scenario = Scenario(
            database_url=where.database_url,
            clock=clock,
            start=start,
            devices=by_id,
            say=lambda text: print(f"[{clock.now():%H:%M} UTC sim] {text}", flush=True),
            leave_second_entrapment=demo.leave_second_entrapment,
        )
        # The scenario is a script, not a component: when it ends (or trips) the demo runs on.
        script = asyncio.create_task(scenario.run(), name="scenario")
        script.add_done_callback(_report_script)
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopped and t.exception() is not None]
        for task in failed:
            log.error("demo component %s failed: %r", task.get_name(), task.exception())
        script.cancel()
        print("stopping...", flush=True)
        stop.set()
        ingest_stop.set()
        for task in tasks:
            if task.get_name() == "api":
                task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    print("stopped.", flush=True)
    return 1 if failed else 0


def _report_script(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("demo scenario stopped: %r", task.exception())


def _port(wanted: int) -> int:
    """The configured API port, or a free one when it is taken."""
    import socket

    with socket.socket() as sock:
        # as uvicorn binds: a port left in TIME_WAIT by the last run is free to take again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def _banner(
    *, where: Endpoints, url: str, logins: dict[str, str], password: str, settings: Settings
) -> None:
    print("Vigil demo is up.")
    print(f"  console:  {url}/")
    print(f"  API docs: {url}/docs")
    print(f"  database: {where.database_url}")
    print(f"  broker:   {where.mqtt_url}")
    print(
        f"  clock:    {settings.demo.factor:g}x real time (a 2-minute accept window is "
        f"{120 / settings.demo.factor:.0f} real seconds; `vigil demo --pace 1` for real time)"
    )
    print("  audit:    the compliance log of this run, while it runs (another terminal):")
    print(f"            VIGIL_DATABASE_URL='{where.database_url}' .venv/bin/vigil audit verify")
    print(f"  logins (password '{password}'):")
    for username, what in logins.items():
        print(f"    {username:<11} {what}")
    print("Press Ctrl-C to stop.", flush=True)
