"""Health figures, and the bound of the store-and-forward queue during a broker outage."""

from __future__ import annotations

from simulators.models import Fault
from tests.gateway.conftest import first_polls, fleet_config, running, tick
from vigil.wire import Health, TelemetryBatch


async def test_health_reports_polls_errors_and_unavailable_devices(
    sim_fleet, clock, mqtt_url, unique_id, tmp_path, collect
):
    runner = sim_fleet(meters=2)
    silent, answering = (p.device_id for p in runner.placements())
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=runner.placements(),
        health_interval_s=10,
        # short where it costs real time; long where a stall of a busy machine must not count
        timeouts={silent: 0.5, answering: 30.0},
    )
    collector = await collect(mqtt_url, f"vigil/v1/health/{unique_id}", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        runner.inject(silent, Fault.COMM_LOSS)
        for _ in range(10):
            await tick(gateway, clock)
        await collector.wait_until(lambda c: c.of(Health))
    (health,) = collector.of(Health)
    assert health.ts == clock.now_ms()
    assert health.polls_per_s == 2.0  # both devices, every second (the silent one fails fast)
    assert health.devices_unavailable == 1
    # Every failed poll is an error (the health timer and the last polls share an instant).
    assert 9 <= health.errors <= gateway.stats.errors
    assert health.buffer_depth <= 4 and health.dropped == 0  # this instant's polls, if any


async def test_a_full_buffer_drops_the_oldest_and_counts_them(
    sim_fleet, clock, broker, unique_id, tmp_path, collect
):
    runner = sim_fleet(meters=2)
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=broker.url,
        placements=runner.placements(),
        max_messages=20,
        health_interval_s=5,
    )
    collector = await collect(broker.url, f"vigil/v1/+/{unique_id}/#", clock=clock)
    async with running(config, clock) as gateway:
        await first_polls(gateway)
        await gateway.link.connected.wait()
        broker.stop()
        outage_start = clock.now_ms()
        for _ in range(15):  # 30 telemetry batches for a queue of 20
            await tick(gateway, clock)
        assert gateway.outbox.depth == 20 and gateway.outbox.dropped >= 10
        dropped = gateway.outbox.dropped
        sessions = gateway.link.sessions
        broker.start()
        while gateway.link.sessions == sessions:  # its backoff runs on the fake clock
            await tick(gateway, clock)
        # Health is QoS 0: the broker keeps none for a subscriber that is not back yet.
        await collector.wait_until(lambda c: c.connects >= 2)
        latest = clock.now_ms()  # once the latest poll is in, the queue has drained (FIFO)
        await collector.wait_until(
            lambda c: sum(1 for b in c.of(TelemetryBatch) if b.samples[0].ts == latest) == 2
        )
        final = gateway.outbox.dropped
        for _ in range(5):  # one health interval
            await tick(gateway, clock)
        await collector.wait_until(lambda c: c.of(Health))
    health = collector.of(Health)[0]
    # Drops went on until the link was back (its backoff), then stopped; health has them all.
    assert health.dropped == final >= dropped
    assert health.buffer_depth < 20  # draining, no longer full
    stamps = sorted(
        {b.samples[0].ts for b in collector.of(TelemetryBatch) if b.samples[0].ts > outage_start}
    )
    # What survived are the newest polls of the outage: the oldest went first.
    lost = [outage_start + 1000 * n for n in range(1, 16) if outage_start + 1000 * n not in stamps]
    assert lost == [outage_start + 1000 * n for n in range(1, len(lost) + 1)]
    assert len(lost) >= 5
