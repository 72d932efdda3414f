"""Benchmark: a fleet of simulated devices in one process, polled over Modbus TCP.

    vigil bench simulators [--elevators 500 --meters 300 --poles 200 --seconds 10 --clients 20]

The fleet (lift controllers, SDM630 meters, street lights) runs in this process on pymodbus
servers, 100 unit ids per port. A separate process polls it with plain pymodbus async clients,
reading each device's whole register map (its block reads) in two phases:

* paced: every device once a second (the gateway's design load, 1,000 devices at 1 Hz);
* flat out: as fast as the clients can go.

It prints requests/s served and the CPU the simulator process used (time.process_time over
wall time, so 100 % is one core), with CPU microseconds per request. The machine is shared
(2 cores, clients and other engineers' work beside it): figures are noisy, compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from simulators.server import ModbusFleet, build_devices
from vigil.clock import RealClock


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="vigil bench simulators", description=__doc__)
    parser.add_argument("--elevators", type=int, default=500)
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--poles", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=20, help="client connections")
    args = parser.parse_args(argv)
    return asyncio.run(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    devices = build_devices(
        clock=RealClock(),
        elevators=args.elevators,
        meters=args.meters,
        poles=args.poles,
        traffic_per_hour=20.0,
    )
    fleet = ModbusFleet(devices, units_per_port=100)
    await fleet.start()
    print(
        f"fleet: {len(devices)} devices ({args.elevators} lifts, {args.meters} meters, "
        f"{args.poles} poles) on {len(fleet.ports)} ports, started in "
        f"{time.perf_counter() - started:.2f} s, max RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    targets = [[p.host, p.port, p.unit, p.model] for p in fleet.placements()]
    try:
        for phase, paced in (("paced 1 Hz", True), ("flat out", False)):
            await _phase(fleet, targets, name=phase, paced=paced, args=args)
    finally:
        await fleet.stop()
    print("(2 shared cores, load generator on the same machine: figures are noisy)")
    return 0


async def _phase(
    fleet: ModbusFleet, targets: list[list], *, name: str, paced: bool, args: argparse.Namespace
) -> None:
    plan = {"targets": targets, "seconds": args.seconds, "paced": paced, "clients": args.clients}
    load = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert load.stdin and load.stdout
    load.stdin.write(json.dumps(plan).encode() + b"\n")
    await load.stdin.drain()
    assert json.loads(await load.stdout.readline()) == "ready"  # clients connected
    served, cpu, wall = fleet.requests_served, time.process_time(), time.perf_counter()
    report: dict[str, Any] = json.loads(await load.stdout.readline())
    served = fleet.requests_served - served
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await load.wait()
    rate = served / wall
    print(
        f"{name:>10}: {rate:8.0f} requests/s served ({report['reads']} reads, "
        f"{report['errors']} errors, {report['device_polls'] / wall:.0f} device polls/s); "
        f"simulator CPU {100 * cpu / wall:5.1f} % of a core, "
        f"{1e6 * cpu / max(served, 1):.0f} us per request"
    )
