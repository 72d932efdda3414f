"""Fault injection from scenario files, the control socket and the ``vigil`` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from runtime.cli import main as vigil_main
from simulators.elevator import Elevator
from simulators.energy_meter import EnergyMeter
from simulators.faults import FaultAction, apply, handle_control_line, load_scenario, run_scenario
from simulators.server import Placement
from simulators.testing import modbus_read
from vigil.catalog import FaultCode, ServiceMode
from vigil.config import ConfigError
from vigil.profiles import builtin_profile

SCENARIO = """\
description = "a morning of trouble"

[[events]]
after_s = 600
device = "lift-0001"
fault = "entrapment_between_floors"
duration_s = 1800

[[events]]
after_s = 60
device = "meter-*"
fault = "voltage_sag"
params = { factor = 0.85 }

[[events]]
after_s = 3600
device = "lift-0002"
visit_s = 1800
"""


def fleet(clock) -> dict:
    devices = [
        Elevator(device_id="lift-0001", clock=clock),
        Elevator(device_id="lift-0002", clock=clock),
        EnergyMeter(device_id="meter-0001", clock=clock),
        EnergyMeter(device_id="meter-0002", clock=clock),
    ]
    return {d.device_id: d for d in devices}


async def until(predicate, *, timeout: float = 5.0) -> None:
    """Let the event loop run until ``predicate()`` holds."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


async def test_a_scenario_applies_each_event_at_its_simulated_time(tmp_path, clock):
    path = tmp_path / "morning.toml"
    path.write_text(SCENARIO)
    devices = fleet(clock)
    scenario = load_scenario(path, device_ids=devices)
    task = asyncio.create_task(run_scenario(scenario, devices=devices, clock=clock))
    await until(lambda: clock.sleepers == 1)
    clock.advance(59)
    await asyncio.sleep(0)
    assert devices["meter-0001"].values()["voltage_l1"] > 220
    clock.advance(1)
    await until(lambda: devices["meter-0002"].values()["voltage_l1"] < 200)
    assert devices["meter-0001"].values()["voltage_l1"] < 200  # the pattern hit both meters
    clock.advance(540)
    lift = devices["lift-0001"]
    await until(lambda: lift.values()["fault_code"] == FaultCode.STOPPED_OUTSIDE_UNLOCKING_ZONE)
    clock.advance(1800)
    assert lift.values()["fault_code"] == FaultCode.NONE  # rescued after 30 minutes
    clock.advance(1200)
    visited = devices["lift-0002"]
    await until(lambda: visited.values()["service_mode"] == ServiceMode.INSPECTION)
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("old", "new", "key", "line"),
    [
        ('fault = "voltage_sag"', 'fault = "voltage_sage"', "events[1].fault", 12),
        ("after_s = 600", "after_s = -1", "events[0].after_s", 4),
        ("visit_s = 1800", 'visit_s = 1800\nfault = "door_fault"', "events[2]", 15),
        ('device = "meter-*"', 'device = "metre-*"', "events[1].device", 11),
    ],
)
def test_scenario_errors_name_file_line_and_key(tmp_path, clock, old, new, key, line):
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_scenario(path, device_ids=fleet(clock))
    assert (caught.value.source, caught.value.key, caught.value.line) == (str(path), key, line)


def test_a_refused_action_changes_nothing(clock):
    devices = fleet(clock)
    with pytest.raises(ValueError, match="no simulated device matches"):
        apply(FaultAction(device="*", fault="power_loss"), devices={})  # nothing matches
    with pytest.raises(ValueError, match=r"meter-0001 .* no fault door_fault"):
        apply(FaultAction(device="*-0001", fault="door_fault"), devices=devices)
    assert all(not d.faults for d in devices.values())  # the lift did not get it either


def test_control_lines_answer_with_clear_errors(clock):
    devices = fleet(clock)
    bad_json = handle_control_line(b"{not json", devices=devices)
    assert bad_json["ok"] is False and "json" in bad_json["error"].lower()
    unknown = handle_control_line(b'{"device": "lift-0001", "fault": "melted"}', devices=devices)
    assert unknown["ok"] is False and unknown["error"].startswith("fault:")
    both = handle_control_line(
        b'{"device": "lift-0001", "fault": "door_fault", "clear": "door_fault"}', devices=devices
    )
    assert both["ok"] is False and "exactly one" in both["error"]
    done = handle_control_line(
        b'{"device": "lift-*", "fault": "alarm_button", "duration_s": 30}', devices=devices
    )
    assert done == {"ok": True, "devices": ["lift-0001", "lift-0002"]}
    assert devices["lift-0002"].values()["alarm_button"] == 1


def test_vigil_simulate_and_sim_fault_end_to_end(tmp_path):
    manifest = tmp_path / "fleet.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "simulate", "--elevators", "3", "--meters", "2",
         "--poles", "1", "--units-per-port", "4", "--control-port", "0",
         "--manifest", str(manifest)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        ready = json.loads(process.stdout.readline())  # printed once every server listens
        assert ready["ready"] and ready["modbus_devices"] == 6 and len(ready["ports"]) == 2
        placements = {
            p["device_id"]: Placement(**p) for p in json.loads(manifest.read_text())["devices"]
        }
        lift = placements["lift-0002"]
        profile = builtin_profile("lift-controller")
        assert modbus_read(lift, profile=profile)["alarm_button"] == 0
        control = f":{ready['control']['port']}"
        assert vigil_main(["sim-fault", "lift-0002", "alarm_button", "--control", control]) == 0
        assert modbus_read(lift, profile=profile)["alarm_button"] == 1
        assert (
            vigil_main(["sim-fault", "lift-0002", "alarm_button", "--clear", "--control", control])
            == 0
        )
        assert modbus_read(lift, profile=profile)["alarm_button"] == 0
        sag = ["sim-fault", "meter-*", "voltage_sag", "--param", "factor=0.5", "--control", control]
        assert vigil_main(sag) == 0
        meter = modbus_read(placements["meter-0002"], profile=builtin_profile("sdm630"))
        assert meter["voltage_l1"] < 120
        refused = ["sim-fault", "pole-0001", "door_fault", "--control", control]
        assert vigil_main(refused) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # stops cleanly on SIGTERM
        process.stdout.close()
