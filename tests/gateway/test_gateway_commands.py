"""Commands are idempotent by id, retained commands are never executed, rounding is reported
(gateway issue 12, items 4, 5 and 9), on simulated controllers and a private Mosquitto."""

from __future__ import annotations

from tests.gateway.conftest import first_polls, fleet_config, running
from tests.gateway.test_gateway_elevator import publish_raw, results, send
from vigil.wire import (
    Command,
    CommandAction,
    CommandOutcome,
    GatewayEvent,
    Status,
    TelemetryBatch,
    encode,
)


async def one_pole(sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect) -> tuple:
    """A simulated street light behind a gateway config, and a collector of command results."""
    runner = sim_fleet(poles=1)
    (pole,) = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=runner.placements()
    )
    collector = await collect(mqtt_url, f"vigil/v1/cmd-result/{unique_id}/+", clock=clock)
    return runner, pole, config, collector


async def test_a_command_id_sent_twice_acts_once_even_across_a_restart(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner, pole, config, collector = await one_pole(
        sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
    )
    now = clock.now_ms()
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        # back to back, the second copy arrives while the first is being written
        await send(mqtt_url, Command(unique_id, pole, "c-twice", CommandAction.DIM, now, 30.0))
        await send(mqtt_url, Command(unique_id, pole, "c-twice", CommandAction.DIM, now, 70.0))
        await collector.wait_until(lambda c: len(results(c, "c-twice")) == 2)
    assert [r.outcome for r in results(collector, "c-twice")] == [CommandOutcome.DONE] * 2
    assert runner.values(pole)["dim_level"] == 30.0  # the repeat did not act
    async with running(config, clock) as gateway:  # the log of ids survives a restart
        await gateway.link.connected.wait()
        await send(mqtt_url, Command(unique_id, pole, "c-twice", CommandAction.DIM, now, 90.0))
        await collector.wait_until(lambda c: len(results(c, "c-twice")) == 3)
    assert results(collector, "c-twice")[2].outcome is CommandOutcome.DONE
    assert runner.values(pole)["dim_level"] == 30.0


async def test_a_retained_command_is_never_executed_and_gets_one_result(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner, pole, config, collector = await one_pole(
        sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
    )
    now = clock.now_ms()
    live = Command(unique_id, pole, "c-live-retained", CommandAction.DIM, now, 11.0)
    away = Command(unique_id, pole, "c-away-retained", CommandAction.DIM, now, 22.0)
    try:
        async with running(config, clock) as gateway:
            await first_polls(gateway)
            await gateway.link.connected.wait()
            # published retained while the gateway is subscribed: forwarded live, flag kept
            await send(mqtt_url, live, retain=True)
            await collector.wait_until(lambda c: results(c, "c-live-retained"))
        # published retained while the gateway is away: its session holds a copy and the broker
        # holds the retained one; both arrive when it comes back
        await send(mqtt_url, away, retain=True)
        async with running(config, clock) as gateway:
            await gateway.link.connected.wait()
            await collector.wait_until(lambda c: len(results(c, "c-away-retained")) >= 2)
            # and an ordinary command after them, so that everything before it has been read
            await send(mqtt_url, Command(unique_id, pole, "c-after", CommandAction.DIM, now, 5.0))
            await collector.wait_until(lambda c: results(c, "c-after"))
    finally:
        for kept in (live, away):  # clear the retained commands
            await publish_raw(mqtt_url, encode(kept)[0], b"", retain=True)
    assert [r.outcome for r in results(collector, "c-live-retained")] == [CommandOutcome.REFUSED]
    outcomes = {r.outcome for r in results(collector, "c-away-retained")}
    assert outcomes == {CommandOutcome.REFUSED}  # one id, one result (repeated, never two)
    assert runner.values(pole)["dim_level"] == 5.0  # only the ordinary command acted


async def test_a_value_rounded_by_the_register_is_reported(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner, pole, config, collector = await one_pole(
        sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
    )
    now = clock.now_ms()
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        await send(mqtt_url, Command(unique_id, pole, "c-round", CommandAction.DIM, now, 33.7))
        await send(mqtt_url, Command(unique_id, pole, "c-exact", CommandAction.DIM, now, 40.0))
        await collector.wait_until(lambda c: results(c, "c-round") and results(c, "c-exact"))
    rounded = results(collector, "c-round")[0]
    assert rounded.outcome is CommandOutcome.DONE
    assert "wrote 34" in rounded.detail and "33.7" in rounded.detail
    assert results(collector, "c-exact")[0].detail == ""
    assert runner.values(pole)["dim_level"] == 40.0


async def test_a_gateway_whose_buffer_was_lost_says_so_and_numbers_in_a_new_epoch(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    # gateway issue 12, item 1: a truncated buffer used to start silently at seq 0 again
    runner = sim_fleet(meters=1)
    (meter,) = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path, gateway_id=unique_id, mqtt_url=mqtt_url, placements=runner.placements()
    )
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/#", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await collector.wait_until(lambda c: any(b.device == meter for b in c.of(TelemetryBatch)))
    config.buffer_path.write_bytes(b"")  # lost while the gateway was stopped
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await collector.wait_until(lambda c: any(s.event for s in c.of(Status)))
        await collector.wait_until(
            lambda c: any(b.epoch == 2 for b in c.of(TelemetryBatch) if b.device == meter)
        )
    (lost,) = [s for s in collector.of(Status) if s.event is not None]
    assert lost.event is GatewayEvent.BUFFER_LOST and "epoch 2" in lost.detail
    first, second = (
        [b for b in collector.of(TelemetryBatch) if b.device == meter and b.epoch == e]
        for e in (1, 2)
    )
    # numbers start again (the same seq as before the loss), told apart by the epoch
    assert first and second and second[0].seq == first[0].seq
