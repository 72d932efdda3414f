"""Acceptance: a plain pymodbus client reads the documented registers of every simulated model.

Values are decoded here with pymodbus's own converters or ``struct`` (not with vigil.profiles),
so these tests check the documented map, not the codec against itself.
"""

from __future__ import annotations

import socket
import struct

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from simulators.energy_meter import EnergyMeter
from simulators.server import Placement
from vigil.catalog import DoorState, FaultCode, LockoutState, ServiceMode

F32 = ModbusTcpClient.DATATYPE.FLOAT32
U32 = ModbusTcpClient.DATATYPE.UINT32
I16 = ModbusTcpClient.DATATYPE.INT16


@pytest.fixture
def modbus():
    """A connected plain pymodbus client factory, closed after the test."""
    clients = []

    def connect(placement: Placement) -> ModbusTcpClient:
        client = ModbusTcpClient(placement.host, port=placement.port, timeout=2, retries=0)
        assert client.connect()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def inputs(client, placement, address, count):
    response = client.read_input_registers(address, count=count, device_id=placement.unit)
    assert not response.isError(), response
    return response.registers


def f32(client, placement, address):
    return client.convert_from_registers(inputs(client, placement, address, 2), F32)


def test_sdm630_test_vectors_on_the_wire(sim_fleet, clock, modbus):
    meter = EnergyMeter(device_id="meter-v", clock=clock, ripple=False)
    runner = sim_fleet(devices=[meter])
    where = runner.placement("meter-v")
    client = modbus(where)
    assert inputs(client, where, 0x0000, 2) == [0x4366, 0x0000]  # 230.0 V
    assert inputs(client, where, 0x0002, 2) == [0x4366, 0x0000]
    assert inputs(client, where, 0x0004, 2) == [0x4366, 0x0000]
    assert inputs(client, where, 0x0046, 2) == [0x4248, 0x0000]  # 50.0 Hz


def test_sdm630_documented_addresses_decode_to_the_meter_state(sim_meter, clock, modbus):
    clock.advance(3600)
    client = modbus(sim_meter.placement)
    where = sim_meter.placement
    expected = sim_meter.values()
    for name, address in {
        "voltage_l1": 0x00, "current_l2": 0x08, "power_l3": 0x10, "power_total": 0x34,
        "power_factor": 0x3E, "frequency": 0x46, "import_energy": 0x48,
        "export_energy": 0x4A, "total_energy": 0x156,
    }.items():  # fmt: skip
        assert f32(client, where, address) == pytest.approx(expected[name], rel=1e-6), name
    assert expected["import_energy"] > 0  # an hour of load was integrated
    assert 190 < f32(client, where, 0x00) < 250


def test_elevator_registers_and_the_out_of_service_request(sim_elevator, clock, modbus):
    where = sim_elevator.placement
    client = modbus(where)
    commissioned = int(clock.now().timestamp())
    sim_elevator.call("hall_call", floor=1, destination=4)
    clock.advance(2.5 + 5 + 3 + 4 + 3 * 2.5 + 2.5)  # door cycle at 1, run to 4, doors open
    status = inputs(client, where, 0x0000, 18)
    assert status[0] == ServiceMode.NORMAL
    assert status[1] == 0 and status[3] == 1  # stopped, in a door zone
    assert client.convert_from_registers(status[4:5], I16) == 4
    assert status[5] == DoorState.OPEN and status[6] == 0  # passenger got out
    assert client.convert_from_registers(status[12:14], U32) == 1  # one trip
    running = client.convert_from_registers(status[14:16], U32) * 0.1
    assert running == pytest.approx(0.0, abs=0.05)  # 11.5 s of running, 0.1 h resolution
    selftest = client.convert_from_registers(status[16:18], U32)
    assert selftest == commissioned  # the self-test passed at commissioning

    written = client.write_register(0x0100, 1, device_id=where.unit)  # lockout (rule M6)
    assert not written.isError()
    assert client.read_holding_registers(0x0100, count=1, device_id=where.unit).registers == [1]
    assert inputs(client, where, 0x000B, 1) == [LockoutState.APPLIED]
    assert inputs(client, where, 0x0000, 1) == [ServiceMode.OUT_OF_SERVICE]
    assert inputs(client, where, 0x0008, 1) == [FaultCode.OUT_OF_SERVICE]
    refused = client.write_register(0x0100, 5, device_id=where.unit)
    assert refused.isError() and refused.exception_code == 3  # ILLEGAL_VALUE
    client.write_register(0x0100, 0, device_id=where.unit)  # release
    assert inputs(client, where, 0x000B, 1) == [LockoutState.NONE]
    serial = client.read_holding_registers(0x0200, count=8, device_id=where.unit).registers
    assert client.convert_from_registers(serial, ModbusTcpClient.DATATYPE.STRING).startswith(
        "SIM-lift-0001"
    )


def test_water_meter_little_endian_floats(sim_water_meter, clock, modbus):
    clock.advance(6 * 3600)
    where = sim_water_meter.placement
    client = modbus(where)
    words = inputs(client, where, 0x0000, 12)
    raw = b"".join(w.to_bytes(2, "big") for w in words)  # bytes as they came off the wire
    forward, reverse = struct.unpack("<dd", raw[:16])
    flow, battery = struct.unpack("<ff", raw[16:24])
    expected = sim_water_meter.values()
    assert forward == pytest.approx(expected["forward_volume"]) and forward > 0
    assert reverse == 0.0 and flow == pytest.approx(expected["flow_rate"], rel=1e-6) and flow > 0
    assert battery == pytest.approx(3.6, abs=0.01)
    valve = client.read_discrete_inputs(0, count=1, device_id=where.unit)
    assert valve.bits[0] is True


def test_street_light_dims_on_command_and_counts_hours(sim_pole, clock, modbus):
    where = sim_pole.placement
    client = modbus(where)
    assert client.read_discrete_inputs(0, count=1, device_id=where.unit).bits[0] is False
    assert f32(client, where, 0x0007) > 1000  # 16:00 local: daylight on the photocell
    clock.advance(3 * 3600)  # 19:00 local: dark
    assert client.read_discrete_inputs(0, count=1, device_id=where.unit).bits[0] is True
    assert inputs(client, where, 0x0000, 1) == [1500]  # 150.0 W at 100 %
    assert not client.write_register(0x0000, 40, device_id=where.unit).isError()  # dim to 40 %
    assert client.read_holding_registers(0, count=1, device_id=where.unit).registers == [40]
    power, current, voltage = inputs(client, where, 0x0000, 3)
    assert (power, voltage) == (600, 2300) and current == round(60 / 230 * 1000)
    refused = client.write_register(0x0000, 150, device_id=where.unit)
    assert refused.isError()  # outside 0-100 %
    clock.advance(7200)
    words = inputs(client, where, 0x0003, 4)
    hours = client.convert_from_registers(words[0:2], U32, word_order="little") * 0.1
    switch_ons = client.convert_from_registers(words[2:4], U32, word_order="little")
    assert (
        hours == pytest.approx(sim_pole.values()["burning_hours"]) and 4.3 <= hours <= 4.5
    )  # lit at 16:33
    assert switch_ons == 1


def test_high_mast_reports_each_lamp(sim_mast, clock, modbus):
    where = sim_mast.placement
    client = modbus(where)
    clock.advance(3 * 3600)
    lamps = client.read_discrete_inputs(0, count=9, device_id=where.unit).bits[:9]
    assert lamps == [True] * 9  # mast relay + 8 lamps
    assert inputs(client, where, 0x000B, 2) == [8, 0]  # lamps_total, lamps_out
    assert inputs(client, where, 0x0010, 8) == [4000] * 8  # 400.0 W each


# -- every fault shows in the registers as documented (docs/register-maps.md) -------------------


def test_entrapment_between_floors(sim_elevator, clock):
    sim_elevator.call("hall_call", floor=1, destination=6)
    clock.advance(2.5 + 5 + 3 + 6)  # boarded, running
    sim_elevator.inject("entrapment_between_floors")
    clock.advance(60)
    shown = sim_elevator.read()
    assert shown["car_status"] == 0 and shown["door_zone"] == 0 and shown["passengers"] == 1
    assert shown["door_state"] == DoorState.CLOSED
    assert shown["fault_code"] == FaultCode.STOPPED_OUTSIDE_UNLOCKING_ZONE
    sim_elevator.clear("entrapment_between_floors")  # rescue: relevel, open, everybody out
    clock.advance(2.5)
    shown = sim_elevator.read()
    assert shown["door_zone"] == 1 and shown["door_state"] == DoorState.OPEN
    assert shown["passengers"] == 0 and shown["fault_code"] == 0


def test_entrapment_at_floor(sim_elevator, clock):
    sim_elevator.inject("entrapment_at_floor")
    clock.advance(180)
    shown = sim_elevator.read()
    assert shown["door_zone"] == 1 and shown["passengers"] == 1
    assert shown["door_state"] == DoorState.CLOSED and shown["car_status"] == 0
    assert shown["fault_code"] == FaultCode.DOOR_OPEN_FAULT


def test_door_fault_keeps_the_doors_open(sim_elevator, clock):
    sim_elevator.inject("door_fault")
    clock.advance(60)
    shown = sim_elevator.read()
    assert (
        shown["door_state"] == DoorState.OPEN and shown["fault_code"] == FaultCode.DOOR_CLOSE_FAULT
    )
    sim_elevator.clear("door_fault")
    clock.advance(3)
    assert sim_elevator.read()["door_state"] == DoorState.CLOSED


def test_alarm_button(sim_elevator, clock):
    sim_elevator.inject("alarm_button", duration_s=20)
    shown = sim_elevator.read()
    assert shown["alarm_button"] == 1 and shown["fault_code"] == FaultCode.ALARM_BUTTON
    clock.advance(20)
    assert sim_elevator.read()["alarm_button"] == 0  # released after 20 s


def test_elevator_power_loss(sim_elevator, clock):
    sim_elevator.inject("power_loss")
    shown = sim_elevator.read()
    assert shown["service_mode"] == ServiceMode.EMERGENCY_POWER and shown["car_status"] == 0
    assert shown["fault_code"] == FaultCode.MAIN_POWER_OFF


def test_missing_alarm_selftest(sim_elevator, clock):
    before = sim_elevator.read()["alarm_selftest_at"]
    sim_elevator.inject("missing_selftest")
    clock.advance(4 * 86_400)
    assert sim_elevator.read()["alarm_selftest_at"] == before  # rule M11: older than 3 days


def test_elevator_counter_reset(sim_elevator, clock):
    sim_elevator.call("hall_call", floor=3, destination=1)
    clock.advance(60)
    assert sim_elevator.read()["trip_count"] == 2
    sim_elevator.inject("counter_reset")
    assert sim_elevator.read()["trip_count"] == 0  # rule E4: a drop


def test_meter_reverse_energy_voltage_sag_counter_reset_and_power_loss(sim_meter, clock):
    clock.advance(3600)
    before = sim_meter.read()
    sim_meter.inject("reverse_energy")
    clock.advance(3600)
    shown = sim_meter.read()
    assert shown["power_total"] < 0 and shown["power_l1"] < 0  # rule E2
    assert shown["export_energy"] > 0 and shown["import_energy"] == before["import_energy"]
    sim_meter.clear("reverse_energy")
    sim_meter.inject("voltage_sag", factor=0.8)
    shown = sim_meter.read()
    assert all(180 < shown[f"voltage_l{n}"] < 186 for n in (1, 2, 3))  # 230 V x 0.8
    sim_meter.inject("counter_reset")
    shown = sim_meter.read()
    assert shown["import_energy"] == 0 and shown["export_energy"] == 0  # rule E4
    sim_meter.inject("power_loss")
    shown = sim_meter.read()
    assert shown["voltage_l1"] == 0 and shown["current_l1"] == 0 and shown["frequency"] == 0


def test_water_meter_reverse_flow_and_counter_reset(sim_water_meter, clock):
    clock.advance(3600)
    sim_water_meter.inject("reverse_flow")
    clock.advance(3600)
    shown = sim_water_meter.read()
    assert shown["flow_rate"] < 0 and shown["reverse_volume"] > 0
    sim_water_meter.inject("counter_reset")
    shown = sim_water_meter.read()
    assert shown["forward_volume"] == 0 and shown["reverse_volume"] == 0


def test_lamp_failure_leaves_the_relay_closed_with_no_power(sim_pole, clock):
    clock.advance(3 * 3600)  # night
    sim_pole.inject("lamp_failure")
    shown = sim_pole.read()
    assert shown["lamp_on"] == 1 and shown["lamp_power"] == 0 and shown["lamp_current"] == 0
    hours = shown["burning_hours"]
    clock.advance(3600)
    assert sim_pole.read()["burning_hours"] == hours  # a dead lamp does not burn (rule L1)


def test_pole_power_loss_and_voltage_sag(sim_pole, clock):
    clock.advance(3 * 3600)
    sim_pole.inject("voltage_sag", factor=0.85)
    assert sim_pole.read()["supply_voltage"] == pytest.approx(195.5)
    sim_pole.inject("power_loss")
    shown = sim_pole.read()
    assert shown["supply_voltage"] == 0 and shown["lamp_on"] == 0 and shown["lamp_power"] == 0


def test_mast_lamps_out(sim_mast, clock):
    clock.advance(3 * 3600)
    sim_mast.inject("mast_lamps_out", lamps=[2, 5, 7, 8])
    shown = sim_mast.read()
    assert shown["lamps_out"] == 4  # rule L2: 50 % out
    assert [shown[f"lamp_{n}_on"] for n in range(1, 9)] == [1, 0, 1, 1, 0, 1, 0, 0]
    assert shown["lamp_2_power"] == 0 and shown["lamp_1_power"] == 400
    assert shown["lamp_power"] == pytest.approx(4 * 400)


def test_comm_loss_times_out_without_closing_the_connection(sim_elevator):
    where = sim_elevator.placement
    with socket.create_connection((where.host, where.port), timeout=2) as sock:
        sock.sendall(read_request(transaction=1, unit=where.unit))
        assert struct.unpack(">H", sock.recv(256)[:2]) == (1,)  # answered
        sim_elevator.inject("comm_loss")
        sock.sendall(read_request(transaction=2, unit=where.unit))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(256)  # no answer, and not b"" (which would mean the server closed)
        sim_elevator.clear("comm_loss")
        sock.settimeout(2)
        sock.sendall(read_request(transaction=3, unit=where.unit))
        answer = sock.recv(256)
        assert struct.unpack(">H", answer[:2]) == (3,)  # the lost request is never answered


def test_comm_loss_seen_by_a_pymodbus_client(sim_elevator):
    sim_elevator.inject("comm_loss")
    quick = ModbusTcpClient(
        sim_elevator.placement.host, port=sim_elevator.placement.port, timeout=0.5, retries=0
    )
    assert quick.connect()  # the device still accepts connections
    try:
        with pytest.raises(ModbusIOException):
            quick.read_input_registers(0, count=1, device_id=sim_elevator.placement.unit)
    finally:
        quick.close()


def read_request(*, transaction: int, unit: int) -> bytes:
    """A raw Modbus TCP frame: read 2 input registers from address 0."""
    return struct.pack(">HHHBBHH", transaction, 0, 6, unit, 4, 0, 2)


def test_a_mast_of_any_size_reports_each_lamp(sim_fleet, clock, modbus):
    runner = sim_fleet(masts=1, mast_lamps=12)
    where = runner.placements()[0]
    assert where.model == "high-mast-12"
    runner.inject(where.device_id, "mast_lamps_out", lamps=[12])
    clock.advance(3 * 3600)
    client = modbus(where)
    lamps = client.read_discrete_inputs(1, count=12, device_id=where.unit).bits[:12]
    assert lamps == [True] * 11 + [False]
    assert inputs(client, where, 0x000B, 2) == [12, 1]
    assert inputs(client, where, 0x0010 + 11, 1) == [0]
