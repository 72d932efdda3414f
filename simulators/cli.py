"""``vigil simulate`` runs a fleet of simulated devices; ``vigil sim-fault`` pokes a running one.

    vigil simulate --elevators 500 --meters 300 --poles 200 --manifest fleet.json \\
        --scenario faults.toml --control-port 7700
    vigil sim-fault lift-0003 entrapment_between_floors --duration-s 1800 --control :7700
    vigil sim-fault 'meter-*' voltage_sag --param factor=0.85 --control 127.0.0.1:7700
    vigil sim-fault lift-0003 entrapment_between_floors --clear --control :7700
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from simulators.faults import load_scenario, run_scenario, send_control, serve_control
from simulators.lighting import StreetLight
from simulators.models import Fault, SimulatedDevice
from simulators.server import MAX_UNITS_PER_PORT, ModbusFleet, build_devices
from simulators.smart_pole import SmartPole
from vigil.clock import Clock, make_clock
from vigil.config import Settings
from vigil.progress import counted

SMART_POLE_PASSWORD_ENV = "VIGIL_SMART_POLE_PASSWORD"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` and ``sim-fault`` subcommands."""
    run = sub.add_parser("simulate", help="run simulated devices (Modbus TCP servers, MQTT poles)")
    for name, help_text in (
        ("elevators", "lift controllers"),
        ("meters", "SDM630-style energy meters"),
        ("water-meters", "water meters"),
        ("poles", "street-light poles (Modbus)"),
        ("masts", "8-lamp high masts"),
        ("smart-poles", "MQTT-native smart poles (need an MQTT broker)"),
    ):
        run.add_argument(f"--{name}", type=int, default=0, metavar="N", help=help_text)
    run.add_argument("--mast-lamps", type=int, default=8, help="lamps per high mast (1-64)")
    run.add_argument("--traffic", type=float, default=20.0, help="hall calls per lift-hour")
    run.add_argument("--seed", type=int, default=0, help="seed of the random traffic")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--base-port", type=int, default=0, help="first port (0: free ports)")
    run.add_argument("--units-per-port", type=int, default=100, help="unit ids per port")
    run.add_argument("--scenario", type=Path, help="TOML file of faults at simulated times")
    run.add_argument("--manifest", type=Path, help="write where each device answers (JSON)")
    run.add_argument("--control-port", type=int, help="take fault actions on this port (0: free)")
    run.add_argument("--factor", type=float, help="simulated seconds per real second")
    run.add_argument("--mqtt-url", help="broker for smart poles (default: settings mqtt_url)")
    run.add_argument("--period-s", type=float, default=60.0, help="smart pole report period")
    run.add_argument("--run-for", type=float, help="stop after this many real seconds")
    run.set_defaults(handler=_simulate)

    fault = sub.add_parser("sim-fault", help="inject or clear a fault in a running simulator")
    fault.add_argument("device", help="device id or shell-style pattern (lift-00*)")
    faults = ", ".join(f.value for f in Fault)
    fault.add_argument(
        "fault", nargs="?", choices=[f.value for f in Fault], metavar="FAULT", help=faults
    )
    fault.add_argument("--clear", action="store_true", help="clear the fault instead")
    fault.add_argument("--visit-s", type=float, help="start a maintenance visit this long")
    fault.add_argument("--duration-s", type=float, help="clear the fault after this long")
    fault.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    fault.add_argument("--control", required=True, metavar="[HOST]:PORT")
    fault.set_defaults(handler=_sim_fault)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.units_per_port <= MAX_UNITS_PER_PORT:
        print(f"vigil simulate: --units-per-port must be 1..{MAX_UNITS_PER_PORT}", file=sys.stderr)
        return 2
    if args.smart_poles and not (args.mqtt_url or settings.mqtt_url):
        print("vigil simulate: smart poles need --mqtt-url or mqtt_url", file=sys.stderr)
        return 2
    if args.factor is not None:
        clock = make_clock(kind="accelerated", factor=args.factor, start=settings.clock.start)
    else:
        clock = make_clock(
            kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
        )
    return asyncio.run(_run(args, settings=settings, clock=clock))


async def _run(args: argparse.Namespace, *, settings: Settings, clock: Clock) -> int:
    devices = build_devices(
        clock=clock,
        elevators=args.elevators,
        meters=args.meters,
        water_meters=args.water_meters,
        poles=args.poles,
        masts=args.masts,
        mast_lamps=args.mast_lamps,
        traffic_per_hour=args.traffic,
        seed=args.seed,
    )
    smart = [
        StreetLight(device_id=f"smart-pole-{n:04d}", clock=clock, seed=args.seed + n)
        for n in range(1, args.smart_poles + 1)
    ]
    by_id: dict[str, SimulatedDevice] = {d.device_id: d for d in [*devices, *smart]}
    scenario = load_scenario(args.scenario, device_ids=by_id) if args.scenario else None
    groups = -(-len(devices) // args.units_per_port)
    ports = [args.base_port + n for n in range(groups)] if args.base_port else None
    fleet = ModbusFleet(devices, host=args.host, units_per_port=args.units_per_port, ports=ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start(
        progress=lambda groups: counted(groups, desc="starting", unit="port", total=len(groups))
    )
    control = None
    if args.control_port is not None:
        control = await serve_control(devices=by_id, host=args.host, port=args.control_port)
    poles = [_smart_pole(light, args=args, settings=settings) for light in smart]
    tasks = [asyncio.create_task(_keep_running(pole)) for pole in poles]
    if scenario is not None:
        tasks.append(asyncio.create_task(run_scenario(scenario, devices=by_id, clock=clock)))
    try:
        ready = _ready_report(fleet, control=control, smart=smart, clock=clock)
        if args.manifest:
            _write_json(args.manifest, ready)
        print(json.dumps({"ready": True, **{k: v for k, v in ready.items() if k != "devices"}}))
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.run_for)
    finally:
        for pole in poles:
            pole.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if control is not None:
            control.close()
        await fleet.stop()
    return 0


def _smart_pole(light: StreetLight, *, args: argparse.Namespace, settings: Settings) -> SmartPole:
    return SmartPole(
        light=light,
        mqtt_url=args.mqtt_url or settings.mqtt_url,
        username=light.device_id,
        password=os.environ.get(SMART_POLE_PASSWORD_ENV, "vigil"),
        period_s=args.period_s,
    )


async def _keep_running(pole: SmartPole) -> None:
    while True:  # a smart pole reconnects after losing its broker
        try:
            await pole.run()
        except Exception as exc:  # keep the pole alive, and say why
            print(f"smart pole {pole.pole_id}: {exc}", file=sys.stderr)
        await asyncio.sleep(5)


def _ready_report(
    fleet: ModbusFleet, *, control: asyncio.Server | None, smart: list[StreetLight], clock: Clock
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": clock.now().isoformat(),
        "devices": [p.as_dict() for p in fleet.placements()],
        "modbus_devices": len(fleet.devices),
        "ports": fleet.ports,
        "smart_poles": [light.device_id for light in smart],
    }
    if control is not None:
        host, port = control.sockets[0].getsockname()[:2]
        report["control"] = {"host": host, "port": port}
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=1))
    partial.replace(path)


def _sim_fault(args: argparse.Namespace, settings: Settings) -> int:
    host, _, port = args.control.rpartition(":")
    action: dict[str, Any] = {"device": args.device}
    if args.visit_s is not None:
        action["visit_s"] = args.visit_s
    elif args.fault is None:
        print("vigil sim-fault: give a FAULT or --visit-s", file=sys.stderr)
        return 2
    else:
        action["clear" if args.clear else "fault"] = args.fault
    if args.duration_s is not None:
        action["duration_s"] = args.duration_s
    try:
        action["params"] = dict(_param(text) for text in args.param)
    except ValueError as exc:
        print(f"vigil sim-fault: {exc}", file=sys.stderr)
        return 2
    answer = asyncio.run(send_control(host=host or "127.0.0.1", port=int(port), action=action))
    if not answer.get("ok"):
        print(f"vigil sim-fault: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"{', '.join(answer['devices'])}: done")
    return 0


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--param needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
