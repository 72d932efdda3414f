"""No poll task ever dies: pymodbus exceptions, resets and handler bugs are counted, not fatal.

The ThingsBoard gateway's polling task died when pymodbus raised after its retries; here every
failure is one failed poll, the device is reported unavailable once, and polling goes on.
"""

from __future__ import annotations

from gateway.reporting import Reporter
from tests.gateway.conftest import ModbusProxy, first_polls, fleet_config, running, tick
from tests.gateway.test_gateway_polling import availability
from vigil.wire import TelemetryBatch


async def test_pymodbus_exceptions_resets_and_bugs_never_end_polling(
    sim_meter, clock, mqtt_url, unique_id, tmp_path, collect, monkeypatch
):
    proxy = await ModbusProxy(sim_meter.placement.port).start()
    placement = sim_meter.placement
    behind_proxy = type(placement)(**{**placement.as_dict(), "port": proxy.port})
    config = fleet_config(
        tmp_path,
        gateway_id=unique_id,
        mqtt_url=mqtt_url,
        placements=[behind_proxy],
        # real seconds: a healthy poll through the proxy must never time out on a loaded
        # machine (it did once at 0.5 s while both cores were busy)
        timeout_s=2.0,
    )
    meter = sim_meter.device_id
    collector = await collect(mqtt_url, f"vigil/v1/+/{unique_id}/+", clock=clock)
    try:
        async with running(config, clock) as gateway:
            await first_polls(gateway)
            assert gateway.stats.failed_polls == 0
            for mode in ("mismatch", "exception", "garbage", "reset"):
                proxy.mode = mode
                for _ in range(9):  # past the 8 s backoff cap: at least one real attempt each
                    await tick(gateway, clock)
            # pymodbus raised after its own timeout (the ThingsBoard case), the device answered
            # with a Modbus exception, and connections died: each was just a failed poll.
            assert {"ModbusIOException", "DeviceError"} <= set(gateway.stats.failures)
            assert gateway.stats.unavailable == {meter}
            # A bug in the code that handles a poll: raised once, counted, not fatal.
            original = Reporter.polled
            calls = []

            def buggy(self, device, *, ts, decoded):
                calls.append(ts)
                if len(calls) == 1:
                    raise RuntimeError("a bug in a handler")
                return original(self, device, ts=ts, decoded=decoded)

            monkeypatch.setattr(Reporter, "polled", buggy)
            proxy.mode = "forward"
            while len(calls) < 3:
                await tick(gateway, clock)
            assert all(not task.done() for task in gateway.tasks)
            assert gateway.stats.unavailable == set()
            assert (
                gateway.stats.failed_polls >= 6
                and gateway.stats.errors > gateway.stats.failed_polls
            )
            await collector.wait_until(lambda c: len(availability(c, meter)) == 3)
            now = clock.now_ms()  # polling is current again
            await collector.wait_until(
                lambda c: any(b.samples[0].ts == now for b in c.of(TelemetryBatch))
            )
    finally:
        await proxy.stop()
    assert availability(collector, meter) == [(1.0, None), (0.0, 1.0), (1.0, 0.0)]
