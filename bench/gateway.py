"""Gateway polling benchmark: N simulated Modbus devices polled at 1 Hz by one gateway process.

    vigil bench gateway                       # 1,000 devices (500 lifts, 300 meters, 200 poles)
    vigil bench gateway --elevators 100 --meters 0 --poles 0 --seconds 20

The devices run in a separate process (``vigil simulate``, the simulators' fleet runner, 100
units per port); the gateway runs here on the real clock and publishes to a private Mosquitto.
After a warm-up it measures for ``--seconds`` and prints: polls/s achieved (and the rate asked
for), failed polls, CPU % of the gateway process (100 % = one core) and of the fleet process,
poll lag percentiles (how late a poll started after its slot), MQTT messages acknowledged/s
and the outbox depth at the end; then, with the fleet stopped, how fast the link forwards a
backlog of ``--drain`` queued messages (recovery after an outage). The machine has 2 cores
shared by the gateway, the fleet, the broker and whatever else runs: the figures are noisy,
and the fleet competes for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.link import BrokerLink
from gateway.models import (
    BrokerConfig,
    BufferConfig,
    DeviceConfig,
    GatewayConfig,
    PollingDefaults,
    build_config,
)
from gateway.service import GatewayService
from gateway.store import Outbox, Outgoing
from vigil.clock import RealClock
from vigil.services import MosquittoBroker
from vigil.wire import Health, Sample, TelemetryBatch, encode

ROOT = Path(__file__).resolve().parent.parent


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vigil bench gateway", description=__doc__)
    parser.add_argument("--elevators", type=int, default=500)
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--poles", type=int, default=200)
    parser.add_argument("--water-meters", type=int, default=0)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--units-per-port", type=int, default=100)
    parser.add_argument("--report", default="periodic", choices=["periodic", "change", "both"])
    parser.add_argument(
        "--drain", type=int, default=20_000, help="backlog forwarded after an outage (0: skip)"
    )
    return parser.parse_args(argv)


async def _drain(count: int, broker: MosquittoBroker, workdir: Path) -> float:
    """Messages per second the link forwards from a backlog in the outbox (no polling)."""
    outbox = Outbox(workdir / "drain.sqlite3", max_messages=count + 1)
    payload = encode(
        TelemetryBatch("gw-drain", "meter-1", 0, tuple(Sample(f"m{i}", 1, 1.0) for i in range(15)))
    )[1]
    outbox.append(
        [Outgoing(f"vigil/v1/telemetry/gw-drain/d{n % 1000}", payload) for n in range(count)]
    )
    link = BrokerLink(
        gateway_id="gw-drain",
        broker=BrokerConfig(url=broker.url, inflight=500),
        outbox=outbox,
        clock=RealClock(),
        on_command=_ignore,
        health=lambda: Health("gw-drain", 0, 0.0, 0, 0),
        health_interval_s=3600,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    await link.connected.wait()
    started = time.monotonic()
    while outbox.depth > 0:  # a benchmark loop sampling progress, not a test wait
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    stop.set()
    await task
    outbox.close()
    return count / elapsed


async def _ignore(topic: str, payload: bytes, retained: bool) -> None:
    return None


def _start_fleet(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[str], list]:
    manifest = workdir / "fleet.json"
    command = [
        sys.executable,
        "-m",
        "runtime.cli",
        "simulate",
        "--elevators",
        str(args.elevators),
        "--meters",
        str(args.meters),
        "--poles",
        str(args.poles),
        "--water-meters",
        str(args.water_meters),
        "--units-per-port",
        str(args.units_per_port),
        "--traffic",
        "20",
        "--manifest",
        str(manifest),
    ]
    log = (workdir / "fleet.log").open("w")  # pymodbus is chatty; kept out of the figures
    fleet = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    assert fleet.stdout is not None
    ready = fleet.stdout.readline()  # the runner prints one JSON line once it listens
    if not ready.startswith("{"):
        fleet.kill()
        raise SystemExit(f"the fleet did not start: see {workdir / 'fleet.log'}")
    return fleet, json.loads(manifest.read_text())["devices"]


def _cpu_s_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    """Resident memory of this process (the gateway), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    args: argparse.Namespace,
    placements: list,
    broker: MosquittoBroker,
    workdir: Path,
    fleet_pid: int,
) -> dict[str, float]:
    settings = GatewayConfig(
        gateway_id="gw-bench",
        data_dir=workdir / "gateway",
        health_interval_s=10,
        broker=BrokerConfig(url=broker.url, inflight=500),
        buffer=BufferConfig(max_messages=1_000_000),
        polling=PollingDefaults(poll_s=args.poll_s, timeout_s=2.0),
        devices=[
            DeviceConfig(
                id=p["device_id"],
                profile=p["model"],
                host=p["host"],
                port=p["port"],
                unit=p["unit"],
                report=args.report,
            )
            for p in placements
        ],
    )
    service = GatewayService(config=build_config(settings), clock=RealClock())
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await asyncio.sleep(args.warmup)  # a benchmark window, not a wait for a condition
    stats = service.stats
    stats.lags_s.clear()
    start = (time.monotonic(), stats.polls, stats.failed_polls, service.link.published)
    cpu0, fleet_cpu0 = _own_cpu_s(), _cpu_s_of(fleet_pid)
    missed0 = stats.missed_slots
    rss = [_rss_mb()]
    # RSS every 10 s over the window: it must stay flat (no growth per poll)
    while time.monotonic() - start[0] < args.seconds:
        await asyncio.sleep(min(10.0, args.seconds - (time.monotonic() - start[0])))
        rss.append(_rss_mb())
    wall = time.monotonic() - start[0]
    figures = {
        "devices": len(placements),
        "asked_polls_per_s": len(placements) / args.poll_s,
        "polls_per_s": (stats.polls - start[1]) / wall,
        "failed_polls": stats.failed_polls - start[2],
        "gateway_cpu_pct": 100 * (_own_cpu_s() - cpu0) / wall,
        "fleet_cpu_pct": 100 * (_cpu_s_of(fleet_pid) - fleet_cpu0) / wall,
        "lag_p50_ms": 1000 * stats.lag_percentile(0.50),
        "lag_p99_ms": 1000 * stats.lag_percentile(0.99),
        "lag_max_ms": 1000 * stats.lag_percentile(1.0),
        "missed_slots": stats.missed_slots - missed0,
        "missed_slots_per_min": 60 * (stats.missed_slots - missed0) / wall,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        "rss_every_10s_mb": " ".join(f"{r:.0f}" for r in rss),
        "mqtt_acked_per_s": (service.link.published - start[3]) / wall,
        "outbox_depth_end": service.outbox.depth,
        "connections": len(service.coordinators),
    }
    stop.set()
    await runner
    return figures


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-gw-"))
    broker = MosquittoBroker(workdir / "mqtt")
    broker.start()
    fleet, placements = _start_fleet(args, workdir)
    try:
        figures = asyncio.run(_measure(args, placements, broker, workdir, fleet.pid))
    finally:
        fleet.terminate()
        fleet.wait(timeout=30)
    try:
        if args.drain:
            figures["backlog_drain_msg_per_s"] = asyncio.run(_drain(args.drain, broker, workdir))
    finally:
        broker.stop()
    print(
        f"gateway benchmark: {figures['devices']} devices at {1 / args.poll_s:g} Hz, "
        f"{figures['connections']} connections, {args.seconds:g} s measured "
        f"(2 shared cores: noisy)"
    )
    for name, value in figures.items():
        print(f"  {name:<24} {value:,.1f}" if isinstance(value, float) else f"  {name:<24} {value}")
    print("command: vigil bench gateway " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
