"""``vigil gateway --config FILE`` as a real process: status online, offline on SIGTERM, the last
will on SIGKILL, and a buffer that survives the crash (real clock, simulated devices)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from vigil.wire import GatewayState, Status, TelemetryBatch

CONFIG = """\
gateway_id = "{gateway}"
data_dir = "state"

[broker]
url = "{url}"
backoff_initial_s = 0.2
backoff_max_s = 0.5

[polling]
poll_s = 0.2
timeout_s = 0.5

[[devices]]
id = "{device}"
profile = "{model}"
host = "{host}"
port = {port}
unit = {unit}
"""


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "gateway", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def states(collector, gateway):
    return [s.state for s in collector.of(Status) if s.gateway == gateway]


async def test_cli_gateway_status_will_and_restart(sim_fleet, broker, unique_id, tmp_path, collect):
    from vigil.clock import RealClock

    clock = RealClock()
    runner = sim_fleet(meters=1, sim_clock=clock)
    (where,) = runner.placements()
    config = tmp_path / "gw.toml"
    config.write_text(
        CONFIG.format(
            gateway=unique_id,
            url=broker.url,
            device=where.device_id,
            model=where.model,
            host=where.host,
            port=where.port,
            unit=where.unit,
        )
    )
    collector = await collect(broker.url, f"vigil/v1/+/{unique_id}/#", clock=clock)
    seqs = collector.seqs[where.device_id]

    process = start(config)
    try:
        await collector.wait_until(lambda c: len(seqs) >= 3)
        process.kill()  # a crash: the broker publishes the last will
        await asyncio.to_thread(process.wait, 10)
        await collector.wait_until(lambda c: GatewayState.OFFLINE in states(c, unique_id))
        assert states(collector, unique_id) == [GatewayState.ONLINE, GatewayState.OFFLINE]
        crashed_at = max(seqs)

        process = start(config)  # same config and data dir: the sequence carries on
        await collector.wait_until(lambda c: max(seqs) >= crashed_at + 3)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        await collector.wait_until(lambda c: len(states(c, unique_id)) == 4)
    finally:
        if process.poll() is None:
            process.kill()
    assert states(collector, unique_id) == [
        GatewayState.ONLINE, GatewayState.OFFLINE, GatewayState.ONLINE, GatewayState.OFFLINE,
    ]  # fmt: skip
    # the crash's offline is the last will, marked so (its ts is the connect time: ingest dates
    # it by receipt); the clean stop's is the gateway's own, dated when it stopped
    offline = [s for s in collector.of(Status) if s.state is GatewayState.OFFLINE]
    assert [s.will for s in offline] == [True, False]
    assert (tmp_path / "state" / "buffer.sqlite3").exists()  # relative to the config file
    # No sequence number was used twice across the crash (numbers may be skipped, never reused).
    telemetry = [b for b in collector.of(TelemetryBatch) if b.device == where.device_id]
    first_copy = {}
    for batch in telemetry:
        assert first_copy.setdefault(batch.seq, batch) == batch
