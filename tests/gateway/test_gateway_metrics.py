"""The gateway's /metrics and /readyz (vigil gateway --metrics-port): figures that move as it
polls, and readiness that follows the broker."""

from __future__ import annotations

import asyncio

import httpx

from tests.gateway.conftest import first_polls, fleet_config, running, tick
from tests.metrics import sample
from vigil import ops


async def test_metrics_move_with_polls_and_readyz_follows_the_broker(
    sim_fleet, clock, broker, unique_id, tmp_path
):
    runner = sim_fleet(meters=2)
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=broker.url, placements=runner.placements()
    )
    health = ops.Health()
    health.add_check("event loop", ops.loop_check(asyncio.get_running_loop()))
    with ops.OpsServer(health=health) as server:
        url = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            before = await client.get("/metrics")
            ok_before = sample(before.text, "vigil_gateway_polls_total", outcome="ok")
            async with running(config, clock) as gateway:
                gateway.watch(health)
                await first_polls(gateway)
                await gateway.link.connected.wait()
                for _ in range(3):
                    await tick(gateway, clock)
                depth_before = gateway.outbox.depth
                after = (await client.get("/metrics")).text
                # 2 meters: the first polls and 3 ticks
                assert sample(after, "vigil_gateway_polls_total", outcome="ok") >= ok_before + 8
                assert sample(after, "vigil_gateway_poll_lag_seconds_count") >= 8
                # the gauge is the outbox read at the scrape: the link may publish meanwhile,
                # and no poll adds to it (the clock stands still), so it lies between the two
                buffered_at_scrape = sample(after, "vigil_gateway_buffer_messages")
                assert gateway.outbox.depth <= buffered_at_scrape <= depth_before
                assert (await client.get("/readyz")).json() == {"ready": True, "problems": []}
                assert (await client.get("/healthz")).status_code == 200

                broker.stop()  # the gateway buffers; it is alive, and says it is not ready
                await _until_not_ready(client)
                await tick(gateway, clock)
                buffered = (await client.get("/metrics")).text
                assert sample(buffered, "vigil_gateway_buffer_messages") >= 1
                not_ready = await client.get("/readyz")
                assert not_ready.status_code == 503
                (problem,) = not_ready.json()["problems"]
                assert problem.startswith("broker: not connected to ")
                assert (await client.get("/healthz")).status_code == 200
                broker.start()
                while not gateway.link.connected.is_set():  # the link's back-off runs on the clock
                    await tick(gateway, clock)
                assert (await client.get("/readyz")).status_code == 200


async def _until_not_ready(client: httpx.AsyncClient) -> None:
    """Wait (bounded) until /readyz says 503: the link notices the broker's loss on its own."""
    async with asyncio.timeout(30):
        while (await client.get("/readyz")).status_code == 200:
            await asyncio.sleep(0.05)
