"""Fault injection: one action model shared by scenario files, the control socket and the CLI.

A scenario file (TOML) schedules actions at simulated times after the fleet starts::

    description = "entrapment in the morning peak"

    [[events]]
    after_s = 600
    device = "lift-0003"
    fault = "entrapment_between_floors"
    duration_s = 1800          # rescued (cleared) 30 minutes later

    [[events]]
    after_s = 3600
    device = "meter-*"         # shell-style patterns pick several devices
    fault = "voltage_sag"
    params = { factor = 0.85 }

    [[events]]
    after_s = 7200
    device = "lift-0001"
    visit_s = 1800             # a maintenance visit: inspection, car-top, pit

Each event has exactly one of ``fault``, ``clear`` or ``visit_s``. A running ``vigil simulate
--control-port P`` takes the same actions as JSON lines (``vigil sim-fault`` sends them).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from simulators.models import Fault, SimulatedDevice
from vigil.clock import Clock
from vigil.config import ConfigError, Section, load_file, locate, read_toml

ParamValue = float | int | bool | str | list[int]


class FaultAction(Section):
    """Inject or clear a fault, or start a maintenance visit, on the devices ``device`` names."""

    device: str = Field(min_length=1, description="device id or shell-style pattern")
    fault: Fault | None = None
    clear: Fault | None = None
    visit_s: float | None = Field(default=None, gt=0, description="maintenance visit length")
    duration_s: float | None = Field(default=None, gt=0, description="the fault clears after")
    params: dict[str, ParamValue] = {}

    @model_validator(mode="after")
    def _one_action(self) -> FaultAction:
        chosen = [name for name in ("fault", "clear", "visit_s") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of fault, clear or visit_s")
        return self


class ScenarioEvent(FaultAction):
    """A fault action at a simulated time."""

    after_s: float = Field(ge=0, description="seconds of simulated time after the start")


class Scenario(Section):
    """Faults and visits scheduled over a run."""

    description: str = ""
    events: list[ScenarioEvent] = []


def load_scenario(path: str | Path, *, device_ids: Iterable[str] | None = None) -> Scenario:
    """Validate a scenario file; with ``device_ids``, every pattern must match a device."""
    scenario = load_file(path, Scenario)
    if device_ids is not None:
        known = list(device_ids)
        for index, event in enumerate(scenario.events):
            if not fnmatch.filter(known, event.device):
                _, text = read_toml(Path(path))
                loc = ("events", index, "device")
                raise ConfigError(
                    source=str(path),
                    key=f"events[{index}].device",
                    reason=f"no simulated device matches {event.device!r}",
                    line=locate(text, loc),
                )
    return scenario


def apply(action: FaultAction, *, devices: dict[str, SimulatedDevice]) -> list[str]:
    """Carry out ``action`` on every matching device; returns their ids (ValueError if none)."""
    chosen = sorted(fnmatch.filter(devices, action.device))
    if not chosen:
        raise ValueError(f"no simulated device matches {action.device!r}")
    for device_id in chosen:  # check them all first: a refused action changes nothing
        device = devices[device_id]
        wanted = action.fault or action.clear
        if wanted is not None and wanted not in device.supported_faults:
            raise ValueError(f"{device_id} ({device.profile.kind}) has no fault {wanted}")
        if action.visit_s is not None and not hasattr(device, "maintenance_visit"):
            raise ValueError(f"{device_id} is not a lift: no maintenance visit")
    for device_id in chosen:
        device = devices[device_id]
        if action.fault is not None:
            device.inject(action.fault, duration_s=action.duration_s, **action.params)
        elif action.clear is not None:
            device.clear(action.clear)
        else:
            device.maintenance_visit(duration_s=action.visit_s, **action.params)  # type: ignore[attr-defined]
    return chosen


async def run_scenario(
    scenario: Scenario,
    *,
    devices: dict[str, SimulatedDevice],
    clock: Clock,
    start: datetime | None = None,
) -> None:
    """Apply each event when the clock reaches ``start + after_s``, in time order."""
    start = start or clock.now()
    for event in sorted(scenario.events, key=lambda e: e.after_s):
        await clock.sleep_until(start + timedelta(seconds=event.after_s))
        apply(event, devices=devices)


# -- the control socket (``vigil simulate --control-port``) ---------------------------------------


async def serve_control(
    *, devices: dict[str, SimulatedDevice], host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Take fault actions as JSON lines; answer each with ``{"ok": ..., ...}``."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(handle_control_line(line, devices=devices)).encode())
                writer.write(b"\n")
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(session, host, port)


def handle_control_line(line: bytes, *, devices: dict[str, SimulatedDevice]) -> dict[str, Any]:
    """One control request; bad input gets a clear error and changes nothing."""
    try:
        action = FaultAction.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return {"ok": False, "error": f"{where}: {first['msg']}" if where else first["msg"]}
    try:
        return {"ok": True, "devices": apply(action, devices=devices)}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}


async def send_control(*, host: str, port: int, action: dict[str, Any]) -> dict[str, Any]:
    """Send one action to a running simulator and return its answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(json.dumps(action).encode() + b"\n")
        await writer.drain()
        return json.loads(await reader.readline())
    finally:
        writer.close()
        await writer.wait_closed()
