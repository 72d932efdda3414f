"""pytest plugin: simulated devices on real Modbus TCP servers, driven by the test's FakeClock.

Add ``"simulators.testing"`` to ``pytest_plugins`` (tests/conftest.py does). Fixtures:

* ``sim_fleet``: a factory; ``sim_fleet(elevators=2, meters=1)`` or ``sim_fleet(devices=[...])``
  starts the devices on free ports and returns a running ``FleetRunner``.
* ``sim_elevator``, ``sim_meter``, ``sim_water_meter``, ``sim_pole``, ``sim_mast``: one device
  each, as a ``SimHandle`` (``.device``, ``.placement``, ``.read()``, ``.inject()``...).

The servers run in a background thread with their own event loop, so sync and async tests,
pymodbus clients and an in-process gateway can all talk to them. Device methods are called on
that thread through ``FleetRunner.call``; the FakeClock (the ``clock`` fixture) is shared, so
``clock.advance(60)`` moves every simulated device. docs/simulators.md has examples.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from pymodbus.client import ModbusTcpClient

from simulators.models import Fault, SimulatedDevice
from simulators.server import ModbusFleet, Placement, build_devices
from vigil.clock import Clock, FakeClock
from vigil.profiles import Profile, Table, decode_block, profile_reads

T = TypeVar("T")


class FleetRunner:
    """A ModbusFleet served from a background thread with its own event loop."""

    def __init__(self, devices: list[SimulatedDevice], **fleet_options: Any) -> None:
        self.fleet = ModbusFleet(devices, **fleet_options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FleetRunner:
        """Start the loop thread and the servers."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        """Stop the servers and the loop thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> FleetRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the servers' thread (where the devices live) and return its result."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed back to the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(30)

    def device(self, device_id: str) -> SimulatedDevice:
        """The simulated device (call its methods through ``call``)."""
        return self.fleet.devices[device_id]

    def placement(self, device_id: str) -> Placement:
        """Where the device answers."""
        return self.fleet.placement(device_id)

    def placements(self) -> list[Placement]:
        """Where every device answers."""
        return self.fleet.placements()

    def inject(self, device_id: str, fault: Fault | str, **params: Any) -> None:
        """Inject a fault (``duration_s=`` clears it after that much simulated time)."""
        self.call(self.fleet.inject, device_id, fault, **params)

    def clear(self, device_id: str, fault: Fault | str) -> None:
        """Clear a fault."""
        self.call(self.fleet.clear, device_id, fault)

    def values(self, device_id: str) -> dict[str, float]:
        """What the device holds now, straight from the model (no Modbus)."""
        return self.call(self.device(device_id).values)

    def read(self, device_id: str, *, timeout: float = 3.0) -> dict[str, float]:
        """What the device shows over Modbus now, decoded with its profile."""
        device = self.device(device_id)
        return modbus_read(self.placement(device_id), profile=device.profile, timeout=timeout)


def modbus_read(
    placement: Placement, *, profile: Profile, timeout: float = 3.0
) -> dict[str, float]:
    """Read every register of ``profile`` from a device with a plain pymodbus client."""
    client = ModbusTcpClient(placement.host, port=placement.port, timeout=timeout, retries=0)
    if not client.connect():
        raise ConnectionError(f"cannot reach {placement.host}:{placement.port}")
    try:
        values: dict[str, float] = {}
        for block in profile_reads(profile):
            words = read_block(
                client, table=block.table, start=block.start, count=block.count, unit=placement.unit
            )
            values.update(decode_block(words, block=block, registers=profile.registers))
        return values
    finally:
        client.close()


def read_block(
    client: ModbusTcpClient, *, table: Table, start: int, count: int, unit: int
) -> list[int] | list[bool]:
    """One read request of the right function for ``table``; raises on an exception answer."""
    readers = {
        Table.COIL: client.read_coils,
        Table.DISCRETE_INPUT: client.read_discrete_inputs,
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
    }
    response = readers[table](start, count=count, device_id=unit)
    if response.isError():
        raise OSError(f"unit {unit} refused {table.name} {start}+{count}: {response}")
    return response.bits[:count] if table.is_bits else response.registers


@dataclass
class SimHandle:
    """One simulated device started for a test."""

    runner: FleetRunner
    device_id: str

    @property
    def device(self) -> SimulatedDevice:
        """The simulated model (call its methods through ``call``)."""
        return self.runner.device(self.device_id)

    @property
    def placement(self) -> Placement:
        """host, port and unit id."""
        return self.runner.placement(self.device_id)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method of the device on the servers' thread: ``call("hall_call", floor=3...)``."""
        return self.runner.call(getattr(self.device, method), *args, **kwargs)

    def read(self) -> dict[str, float]:
        """What the device shows over Modbus now."""
        return self.runner.read(self.device_id)

    def values(self) -> dict[str, float]:
        """What the model holds now (no Modbus)."""
        return self.runner.values(self.device_id)

    def inject(self, fault: Fault | str, **params: Any) -> None:
        """Inject a fault."""
        self.runner.inject(self.device_id, fault, **params)

    def clear(self, fault: Fault | str) -> None:
        """Clear a fault."""
        self.runner.clear(self.device_id, fault)


@pytest.fixture
def sim_fleet(clock: FakeClock) -> Iterator[Callable[..., FleetRunner]]:
    """Factory: start simulated devices on free ports; all are stopped after the test."""
    runners: list[FleetRunner] = []

    def start(
        *,
        devices: list[SimulatedDevice] | None = None,
        sim_clock: Clock | None = None,
        units_per_port: int = 247,
        **counts: Any,
    ) -> FleetRunner:
        if devices is None:
            devices = build_devices(clock=sim_clock or clock, **counts)
        runner = FleetRunner(devices, units_per_port=units_per_port).start()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.stop()


def _single(sim_fleet: Callable[..., FleetRunner], **counts: int) -> SimHandle:
    runner = sim_fleet(**counts)
    return SimHandle(runner, runner.placements()[0].device_id)


@pytest.fixture
def sim_elevator(sim_fleet: Callable[..., FleetRunner]) -> SimHandle:
    """One simulated lift controller (floors 1..7, no random traffic) on a free port."""
    return _single(sim_fleet, elevators=1)


@pytest.fixture
def sim_meter(sim_fleet: Callable[..., FleetRunner]) -> SimHandle:
    """One simulated SDM630-style energy meter on a free port."""
    return _single(sim_fleet, meters=1)


@pytest.fixture
def sim_water_meter(sim_fleet: Callable[..., FleetRunner]) -> SimHandle:
    """One simulated water meter on a free port."""
    return _single(sim_fleet, water_meters=1)


@pytest.fixture
def sim_pole(sim_fleet: Callable[..., FleetRunner]) -> SimHandle:
    """One simulated street-light pole on a free port."""
    return _single(sim_fleet, poles=1)


@pytest.fixture
def sim_mast(sim_fleet: Callable[..., FleetRunner]) -> SimHandle:
    """One simulated 8-lamp high mast on a free port."""
    return _single(sim_fleet, masts=1)
