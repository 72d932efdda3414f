"""A gateway speaking MQTT 3.1.1 to a NATS node's MQTT listener, ingest reading JetStream: the
devices' readings reach the database, and a command from the platform reaches the device and its
result the database, on the clustered broker path (issue 20)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from fleet.factory import FleetFactory
from ingest.models import IngestStats
from tests.gateway.conftest import first_polls, fleet_config, running
from tests.gateway.test_gateway_elevator import send
from tests.ingest.conftest import running_worker
from vigil.services import NatsCluster, nats_binary
from vigil.wire import Command, CommandAction

try:
    nats_binary()
except Exception:
    pytest.skip("nats-server is not installed", allow_module_level=True)


async def test_a_gateway_on_mqtt_311_reaches_the_database_through_nats(
    sim_fleet, clock, unique_id, tmp_path, db_url
):
    runner = sim_fleet(meters=1, poles=1)
    placements = runner.placements()
    with psycopg.connect(db_url, autocommit=True) as conn:
        make = FleetFactory(conn, at=clock.now())
        site = make.site()
        make.gateway(unique_id, site=site)
        for where in placements:
            make.device(
                where.device_id,
                site=site,
                kind=where.kind,
                model=where.model,
                gateway=unique_id,
            )
        pole = next(w.device_id for w in placements if w.kind == "light_pole")
        # the platform's command, as the API records it before sending
        conn.execute(
            "INSERT INTO commands (id, device_id, action, value, issued_by, issued_at) "
            "VALUES ('c-nats', %s, 'dim', 30, 'test', %s)",
            (pole, clock.now()),
        )
    with NatsCluster(tmp_path / "nats", size=1) as cluster:
        config = fleet_config(
            tmp_path,
            gateway_id=unique_id,
            mqtt_url=cluster.nodes[0].mqtt_url,
            placements=placements,
            protocol="3.1.1",  # NATS refuses MQTT v5 at connect
        )
        stats = IngestStats()
        with running_worker(
            db_url=db_url, mqtt_url=cluster.url, clock=clock, stats=stats, nats_replicas=1
        ):
            async with running(config, clock) as gateway:
                await first_polls(gateway)
                stored = await asyncio.to_thread(
                    stats.wait_for, lambda s: s.points_stored >= 2, timeout=30
                )
                await gateway.link.connected.wait()
                command = Command(
                    unique_id, pole, "c-nats", CommandAction.DIM, clock.now_ms(), 30.0
                )
                await send(cluster.nodes[0].mqtt_url, command)  # MQTT 3.1.1 QoS 1, as the platform
                answered = await asyncio.to_thread(
                    stats.wait_for, lambda s: s.command_results_stored >= 1, timeout=30
                )
    assert stored, "no reading reached the database"
    assert answered and runner.values(pole)["dim_level"] == 30.0
    with psycopg.connect(db_url) as conn:
        devices = {
            row[0] for row in conn.execute("SELECT DISTINCT device_id FROM telemetry").fetchall()
        }
        outcome = conn.execute(
            "SELECT outcome FROM command_results WHERE command_id = 'c-nats'"
        ).fetchall()
    assert devices == {where.device_id for where in placements}
    assert [row[0] for row in outcome] == ["done"]
