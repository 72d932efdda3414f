"""A gateway speaking MQTT 3.1.1 to a NATS node's MQTT listener, ingest reading JetStream: the
devices' readings reach the database on the clustered broker path (issue 20)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from fleet.factory import FleetFactory
from ingest.models import IngestStats
from tests.gateway.conftest import first_polls, fleet_config, running
from tests.ingest.conftest import running_worker
from vigil.services import NatsCluster, nats_binary

try:
    nats_binary()
except Exception:
    pytest.skip("nats-server is not installed", allow_module_level=True)


async def test_a_gateway_on_mqtt_311_reaches_the_database_through_nats(
    sim_fleet, clock, unique_id, tmp_path, db_url
):
    runner = sim_fleet(meters=2)
    placements = runner.placements()
    with psycopg.connect(db_url, autocommit=True) as conn:
        make = FleetFactory(conn, at=clock.now())
        site = make.site()
        make.gateway(unique_id, site=site)
        for where in placements:
            make.device(
                where.device_id,
                site=site,
                kind="energy_meter",
                model=where.model,
                gateway=unique_id,
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
    assert stored, "no reading reached the database"
    with psycopg.connect(db_url) as conn:
        devices = {
            row[0] for row in conn.execute("SELECT DISTINCT device_id FROM telemetry").fetchall()
        }
    assert devices == {where.device_id for where in placements}
