"""Real Modbus TCP servers (pymodbus) in front of simulated devices, and fleets of them.

Each device becomes a pymodbus ``SimDevice`` (the datastore API of pymodbus 3.12+) whose
registers span its profile's map. The device's ``action`` hook runs on every request: a read
first brings the device up to its clock and encodes every metric with the shared codec
(``vigil.profiles``); a write is handed to the device, which applies it or refuses it
(``ILLEGAL_VALUE``). Many devices share a port as unit ids 1..247; a fleet spreads devices
over as many ports as it needs.

Communication loss: the hook of a device that has lost its link never returns, so no answer is
sent and the client's request times out, while the TCP connection stays open. When the link
comes back, the requests caught in it are dropped unanswered, as a real line would drop them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.models import CommandRefused, Fault, SimulatedDevice
from vigil.clock import Clock
from vigil.profiles import Point, Table, builtin_profile, encode_value

MAX_UNITS_PER_PORT = 247  # Modbus unit ids 1..247
TABLE_BY_FUNCTION = {
    1: Table.COIL,
    5: Table.COIL,
    15: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING,
    6: Table.HOLDING,
    16: Table.HOLDING,
    22: Table.HOLDING,
    23: Table.HOLDING,
    4: Table.INPUT,
}
_TUPLE_ORDER = (Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING, Table.INPUT)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a simulated device answers."""

    device_id: str
    model: str
    kind: str
    host: str
    port: int
    unit: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the fleet manifest)."""
        return asdict(self)


class ModbusEndpoint:
    """One simulated device as a pymodbus SimDevice (one unit id on a server)."""

    def __init__(self, *, device: SimulatedDevice, unit: int) -> None:
        if not 1 <= unit <= MAX_UNITS_PER_PORT:
            raise ValueError(f"unit id {unit} is outside 1..{MAX_UNITS_PER_PORT}")
        self.device = device
        self.unit = unit
        self.requests = 0
        self._caught: set[asyncio.Future[None]] = set()
        self._registers = {
            table: [r for r in device.profile.registers if r.table is table] for table in Table
        }

    def sim_device(self) -> SimDevice:
        """The pymodbus description of this device: four tables sized to its map."""
        blocks = tuple(self._table_block(table) for table in _TUPLE_ORDER)
        return SimDevice(id=self.unit, simdata=blocks, action=self.action)  # type: ignore[arg-type]

    def _table_block(self, table: Table) -> list[SimData]:
        profile = self.device.profile
        points: list[Point] = [
            *self._registers[table],
            *(p for p in profile.identity if p.table is table),
            *(p for p in profile.commands if p.table is table),
        ]
        if not points and table.is_bits:  # pymodbus wants bits here: park 16 far away
            return [SimData(address=0xFFF0, count=16, values=False, datatype=DataType.BITS)]
        if not points:
            return [SimData(address=0, count=1, datatype=DataType.INVALID)]
        end = max(point.end for point in points)
        if table.is_bits:
            return [SimData(address=0, count=end, values=False, datatype=DataType.BITS)]
        words = [0] * end
        identity = self.device.identity()
        for point in profile.identity:
            if point.table is table:
                encoded = encode_value(identity[point.name], point=point)
                words[point.address : point.end] = encoded
        return [SimData(address=0, values=words, datatype=DataType.REGISTERS)]

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook, run on every request before it is answered."""
        if self.device.comm_lost:
            await self._never_answer()
        if self._caught:  # the link came back (e.g. a timed fault ended)
            self.drop_caught_requests()
        self.requests += 1
        table = TABLE_BY_FUNCTION[function_code]
        if set_values is not None:
            try:
                self.device.write(table=table, address=address, words=[int(v) for v in set_values])
            except CommandRefused:
                return ExcCodes.ILLEGAL_VALUE
            return None
        self._fill(table=table, start=start_address, registers=registers)
        return None

    def _fill(self, *, table: Table, start: int, registers: list[int]) -> None:
        values = self.device.values()
        if table.is_bits:  # packed 16 bits per register, bit 0 first; start is in registers
            for reg in self._registers[table]:
                index, bit = divmod(reg.address, 16)
                if values[reg.metric]:
                    registers[index - start] |= 1 << bit
                else:
                    registers[index - start] &= ~(1 << bit)
            return
        for reg in self._registers[table]:
            offset = reg.address - start
            registers[offset : offset + reg.count] = encode_value(values[reg.metric], point=reg)

    async def _never_answer(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._caught.add(future)
        try:
            await future  # only ever cancelled: the request dies unanswered
        finally:
            self._caught.discard(future)

    def drop_caught_requests(self) -> None:
        """Cancel the requests caught by a communication loss, leaving them unanswered."""
        for future in list(self._caught):
            future.cancel()


class ModbusFleet:
    """Simulated devices behind one or more pymodbus TCP servers in this process."""

    def __init__(
        self,
        devices: Iterable[SimulatedDevice],
        *,
        host: str = "127.0.0.1",
        units_per_port: int = MAX_UNITS_PER_PORT,
        ports: Sequence[int] | None = None,
    ) -> None:
        if not 1 <= units_per_port <= MAX_UNITS_PER_PORT:
            raise ValueError(f"units_per_port must be 1..{MAX_UNITS_PER_PORT}")
        self.host = host
        self.devices: dict[str, SimulatedDevice] = {}
        self._groups: list[list[ModbusEndpoint]] = []
        for device in devices:
            if device.device_id in self.devices:
                raise ValueError(f"two devices are called {device.device_id}")
            self.devices[device.device_id] = device
            if not self._groups or len(self._groups[-1]) >= units_per_port:
                self._groups.append([])
            group = self._groups[-1]
            group.append(ModbusEndpoint(device=device, unit=len(group) + 1))
        if ports is not None and len(ports) != len(self._groups):
            raise ValueError(f"{len(self._groups)} ports needed, {len(ports)} given")
        self._wanted_ports = list(ports) if ports is not None else [0] * len(self._groups)
        self._servers: list[ModbusTcpServer] = []
        self.ports: list[int] = []
        self._endpoints = {e.device.device_id: e for group in self._groups for e in group}

    async def start(self, *, progress: Callable[[list[Any]], Iterable[Any]] | None = None) -> None:
        """Listen on every port (free ones when none were given); ``progress`` wraps the list of
        (devices, port) groups walked (a command's progress bar)."""
        groups = list(zip(self._groups, self._wanted_ports, strict=True))
        for group, wanted in groups if progress is None else progress(groups):
            server = ModbusTcpServer(
                [endpoint.sim_device() for endpoint in group], address=(self.host, wanted)
            )
            await server.serve_forever(background=True)
            self._servers.append(server)
            self.ports.append(server.transport.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Drop caught requests, close every connection and stop listening."""
        for endpoint in self._endpoints.values():
            endpoint.drop_caught_requests()
        for server in self._servers:
            await server.shutdown()
        self._servers.clear()

    async def __aenter__(self) -> ModbusFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what is where ---------------------------------------------------------------------------

    def placements(self) -> list[Placement]:
        """Where each device answers (needs ``start()`` first)."""
        out = []
        for group, port in zip(self._groups, self.ports, strict=True):
            for endpoint in group:
                device = endpoint.device
                out.append(
                    Placement(
                        device_id=device.device_id,
                        model=device.profile.model,
                        kind=str(device.profile.kind),
                        host=self.host,
                        port=port,
                        unit=endpoint.unit,
                    )
                )
        return out

    def placement(self, device_id: str) -> Placement:
        """Where one device answers."""
        for found in self.placements():
            if found.device_id == device_id:
                return found
        raise KeyError(device_id)

    @property
    def requests_served(self) -> int:
        """Requests answered (or caught) since start, over every device."""
        return sum(e.requests for e in self._endpoints.values())

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, device_id: str, fault: Fault | str, **params: Any) -> None:
        """Inject a fault into one device."""
        self.devices[device_id].inject(fault, **params)

    def clear(self, device_id: str, fault: Fault | str) -> None:
        """Clear a fault; a restored link drops the requests it had caught."""
        self.devices[device_id].clear(fault)
        if Fault(fault) is Fault.COMM_LOSS:
            self._endpoints[device_id].drop_caught_requests()


def build_devices(
    *,
    clock: Clock,
    elevators: int = 0,
    meters: int = 0,
    water_meters: int = 0,
    poles: int = 0,
    masts: int = 0,
    mast_lamps: int = 8,
    traffic_per_hour: float = 0.0,
    seed: int = 0,
    prefix: str = "",
) -> list[SimulatedDevice]:
    """A fleet's devices, named ``{prefix}lift-0001``, ``meter-0001``, ``water-0001``..."""
    from simulators.elevator import Elevator
    from simulators.energy_meter import EnergyMeter
    from simulators.lighting import HighMast, StreetLight
    from simulators.water_meter import WaterMeter

    devices: list[SimulatedDevice] = []
    for n in range(1, elevators + 1):
        devices.append(
            Elevator(
                device_id=f"{prefix}lift-{n:04d}",
                clock=clock,
                seed=seed + n,
                highest=6 + n % 25,
                traffic_per_hour=traffic_per_hour,
            )
        )
    for n in range(1, meters + 1):
        devices.append(
            EnergyMeter(
                device_id=f"{prefix}meter-{n:04d}",
                clock=clock,
                seed=seed + n,
                mean_power_w=2_000.0 + 500.0 * (n % 20),
                import_kwh=1_000.0 * (n % 50),
            )
        )
    for n in range(1, water_meters + 1):
        devices.append(WaterMeter(device_id=f"{prefix}water-{n:04d}", clock=clock, seed=seed + n))
    for n in range(1, poles + 1):
        devices.append(StreetLight(device_id=f"{prefix}pole-{n:04d}", clock=clock, seed=seed + n))
    for n in range(1, masts + 1):
        devices.append(
            HighMast(
                device_id=f"{prefix}mast-{n:04d}",
                clock=clock,
                seed=seed + n,
                profile=builtin_profile(f"high-mast-{mast_lamps}"),
            )
        )
    return devices
