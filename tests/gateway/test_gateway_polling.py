"""Polling simulated devices over real Modbus TCP and publishing to a real Mosquitto."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

from gateway.service import GatewayService
from simulators.models import Fault
from tests.gateway.conftest import first_polls, fleet_config, running, tick
from vigil.wire import EventBatch, GatewayState, Status, TelemetryBatch


async def test_samples_of_every_device_arrive_with_poll_timestamps(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner = sim_fleet(elevators=2, meters=2)
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=runner.placements()
    )
    collector = await collect(mqtt_url, f"vigil/v1/telemetry/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        poll_times = [clock.now_ms()]
        for _ in range(2):
            await tick(gateway, clock)
            poll_times.append(clock.now_ms())
        await collector.wait_until(lambda c: len(c.of(TelemetryBatch)) == 4 * 3)
    batches = collector.of(TelemetryBatch)
    for device in config.devices:
        mine = [b for b in batches if b.device == device.id]
        assert [b.seq for b in mine] == sorted(b.seq for b in mine)
        assert sorted({s.ts for b in mine for s in b.samples}) == poll_times
        assert {s.metric for s in mine[0].samples} == set(device.profile.metrics)


def availability(collector, device_id):
    """The (value, previous) pairs of the device's ``available`` events, in order."""
    return [
        (e.value, e.previous)
        for batch in collector.distinct(EventBatch)
        if batch.device == device_id
        for e in batch.events
        if e.metric == "available"
    ]


def telemetry_of(collector, device_id):
    """The device's telemetry batches, each once."""
    return [b for b in collector.distinct(TelemetryBatch) if b.device == device_id]


async def test_a_silent_device_is_unavailable_once_and_comes_back_by_itself(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner = sim_fleet(meters=2)  # both on one connection: units 1 and 2
    silent, neighbour = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=runner.placements(),
        # The silent unit's attempts each cost its timeout in real time, so it is short; the
        # neighbour's is long, so that a stall of this busy machine cannot fail one of its
        # 1,324 requests (a CI run once did, with both at 0.5 s).
        timeouts={silent: 0.5, neighbour: 30.0},
        backoff_max_s=60.0,
    )
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        # The server keeps the connection open and simply stops answering that unit.
        runner.inject(silent, Fault.COMM_LOSS)
        for _ in range(600):  # ten minutes of 1 Hz polls
            await tick(gateway, clock)
        assert gateway.stats.unavailable == {silent}
        runner.clear(silent, Fault.COMM_LOSS)
        for _ in range(61):  # at most one capped backoff (60 s) until the next attempt
            await tick(gateway, clock)
        assert gateway.stats.unavailable == set()
        await collector.wait_until(lambda c: len(availability(c, silent)) >= 3)
        await collector.wait_until(lambda c: len(telemetry_of(c, neighbour)) >= 662)
    assert availability(collector, silent) == [(1.0, None), (0.0, 1.0), (1.0, 0.0)]
    assert availability(collector, neighbour) == [(1.0, None)]
    # The neighbour on the same line kept its 1 Hz schedule throughout.
    neighbour_ts = sorted(b.samples[0].ts for b in telemetry_of(collector, neighbour))
    assert len(neighbour_ts) == 662
    assert all(later - earlier == 1000 for earlier, later in pairwise(neighbour_ts))
    # A silent unit is retried with capped exponential backoff (1, 2, 4... 60 s), not every
    # second: about 16 attempts in ten minutes, each holding the line for one timeout.
    assert 10 <= gateway.stats.timeouts <= 20
    # Block reads: the SDM630 map is two requests per poll, for every successful poll.
    served_polls = len(collector.distinct(TelemetryBatch))
    assert runner.fleet.requests_served == 2 * served_polls


async def test_a_unit_is_given_up_on_after_its_own_timeout_not_its_neighbours(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path
):
    # Units on one connection share one pymodbus client, which times out after the longest
    # of their timeouts: a fast unit that went silent held the line for its slow neighbour's
    # 30 s, and its poll outlasted the tick (20 s), where it now gives up after its own 0.5 s.
    runner = sim_fleet(meters=2)
    fast, slow = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=runner.placements(),
        timeouts={fast: 0.5, slow: 30.0},
    )
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        runner.inject(fast, Fault.COMM_LOSS)
        await tick(gateway, clock)
        assert gateway.stats.unavailable == {fast}
        assert gateway.stats.timeouts == 1
        await tick(gateway, clock)  # the line was reopened: the slow unit answers as before
        assert gateway.stats.unavailable == {fast}
        # every failed poll is the fast unit's (tried again after its 1 s backoff)
        assert gateway.stats.failed_polls == gateway.stats.timeouts == 2


async def test_cancelling_the_runner_shuts_down_cleanly(
    sim_meter, clock, mqtt_url, unique_id, tmp_path, collect
):
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=[sim_meter.placement]
    )
    collector = await collect(mqtt_url, f"vigil/v1/status/{unique_id}", clock=clock)
    service = GatewayService(config=config, clock=clock, stagger=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await first_polls(service)
    await service.link.connected.wait()
    task.cancel()  # as a supervisor would, without setting stop
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=15)
    await collector.wait_until(lambda c: len(c.of(Status)) == 2)
    assert [s.state for s in collector.of(Status)] == [GatewayState.ONLINE, GatewayState.OFFLINE]
    assert all(t.done() for t in service.tasks)


async def test_silent_units_cost_their_neighbours_no_poll(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    # gateway issue 12, item 7: two silent units on one line used to put the whole connection
    # into backoff (the second timed out on a connection reopened after the first's timeout),
    # and the unit sharing the line with them missed its polls meanwhile
    runner = sim_fleet(meters=3)  # one connection: units 1, 2 and 3
    first, second, neighbour = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=runner.placements(),
        # short for the silent units (real time), long for the neighbour: see above
        timeouts={first: 0.3, second: 0.3, neighbour: 30.0},
        backoff_max_s=8.0,
    )
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        runner.inject(first, Fault.COMM_LOSS)
        runner.inject(second, Fault.COMM_LOSS)
        for _ in range(30):
            await tick(gateway, clock)
        assert gateway.stats.unavailable == {first, second}
        await collector.wait_until(lambda c: len(telemetry_of(c, neighbour)) >= 31)
    assert availability(collector, neighbour) == [(1.0, None)]
    neighbour_ts = sorted(b.samples[0].ts for b in telemetry_of(collector, neighbour))
    assert len(neighbour_ts) == 31
    assert all(later - earlier == 1000 for earlier, later in pairwise(neighbour_ts))


async def test_a_64_lamp_mast_at_night_reads_good_through_the_gateway(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    # the mast registers once overflowed: 8 lamps read 13.9 A against a 0-10 A range (every lit
    # poll flagged bad), 16 lamps exceeded the power range, 17 no longer fit the register
    runner = sim_fleet(masts=1, mast_lamps=64)
    [where] = runner.placements()
    assert where.model == "high-mast-64"
    clock.advance(3 * 3600)  # 19:00 in Shanghai: dark, the photocell closes the relay
    config = fleet_config(tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=[where])
    collector = await collect(mqtt_url, f"vigil/v1/telemetry/{unique_id}/+", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await collector.wait_until(lambda c: len(c.of(TelemetryBatch)) >= 1)
    [batch] = collector.of(TelemetryBatch)[:1]
    samples = {s.metric: s for s in batch.samples}
    assert samples["lamp_on"].value == 1 and samples["lamps_total"].value == 64
    assert samples["lamps_out"].value == 0
    assert samples["lamp_power"].value == 64 * 400.0  # 25.6 kW: every lamp at full power
    volts = samples["supply_voltage"].value
    assert samples["lamp_current"].value == pytest.approx(64 * 400.0 / volts, abs=0.001)
    assert samples["lamp_64_power"].value == 400.0
    assert all(s.good for s in batch.samples), [s for s in batch.samples if not s.good]
