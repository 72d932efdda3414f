"""A Modbus load generator: polls simulated devices' register maps with pymodbus clients.

Used by ``bench/simulators.py`` as a separate process: it reads a JSON plan on stdin
(``targets`` [[host, port, unit, model]...], ``seconds``, ``paced``, ``clients``), prints
``"ready"`` once connected, polls, and prints a JSON report (reads, errors, device polls).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from vigil.profiles import Block, Table, builtin_profile, profile_reads


def main() -> None:
    """Run one plan from stdin."""
    plan = json.loads(sys.stdin.readline())
    asyncio.run(poll(**plan))


async def poll(*, targets: list[list[Any]], seconds: float, paced: bool, clients: int) -> None:
    """Poll every target's blocks, once a second each (paced) or as fast as possible."""
    shares = [targets[n::clients] for n in range(clients)]
    connections: list[dict[tuple[str, int], AsyncModbusTcpClient]] = []
    for share in shares:
        by_port = {}
        for host, port in {(t[0], t[1]) for t in share}:
            client = AsyncModbusTcpClient(host, port=port, timeout=5, retries=0)
            await client.connect()
            by_port[(host, port)] = client
        connections.append(by_port)
    _say("ready")
    totals = {"reads": 0, "errors": 0, "device_polls": 0}
    deadline = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            _poll_share(share, by_port=by_port, deadline=deadline, paced=paced, totals=totals)
            for share, by_port in zip(shares, connections, strict=True)
        )
    )
    _say(totals)
    for by_port in connections:
        for client in by_port.values():
            client.close()


async def _poll_share(
    share: list[list[Any]],
    *,
    by_port: dict[tuple[str, int], AsyncModbusTcpClient],
    deadline: float,
    paced: bool,
    totals: dict[str, int],
) -> None:
    reads = {t[3]: profile_reads(builtin_profile(t[3])) for t in share}
    next_round = time.perf_counter()
    while time.perf_counter() < deadline:
        for host, port, unit, model in share:
            client = by_port[(host, port)]
            for block in reads[model]:
                totals["errors"] += not await _read(client, block=block, unit=unit)
                totals["reads"] += 1
            totals["device_polls"] += 1
        if paced:
            next_round += 1.0
            await asyncio.sleep(max(0.0, next_round - time.perf_counter()))


async def _read(client: AsyncModbusTcpClient, *, block: Block, unit: int) -> bool:
    read = {
        Table.COIL: client.read_coils,
        Table.DISCRETE_INPUT: client.read_discrete_inputs,
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
    }[block.table]
    try:
        response = await read(block.start, count=block.count, device_id=unit)
    except Exception:  # a timeout is an error; the poll goes on
        return False
    return not response.isError()


def _say(message: object) -> None:
    print(json.dumps(message), flush=True)


if __name__ == "__main__":
    main()
