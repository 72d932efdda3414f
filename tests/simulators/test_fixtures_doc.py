"""The fixture examples of docs/simulators.md, run as written."""

from __future__ import annotations


def test_gateway_sees_an_entrapment(sim_fleet, clock):
    fleet = sim_fleet(elevators=2)
    lift = fleet.placements()[0]  # host, port, unit for the gateway
    fleet.call(fleet.device(lift.device_id).hall_call, floor=1, destination=5)
    clock.advance(12)
    fleet.inject(lift.device_id, "entrapment_between_floors")
    clock.advance(30)  # rule R1: 30 s outside a door zone
    shown = fleet.read(lift.device_id)
    assert shown["door_zone"] == 0 and shown["passengers"] == 1


def test_lockout_waits_for_an_empty_car(sim_elevator, clock):
    sim_elevator.call("set_occupied", True)
    sim_elevator.call("command", "lockout")
    assert sim_elevator.read()["lockout_state"] == 1  # pending
    sim_elevator.call("set_occupied", False)
    clock.advance(10)
    assert sim_elevator.read()["lockout_state"] == 2  # applied


def test_many_units_share_a_port_and_each_answers_for_itself(sim_fleet, clock):
    fleet = sim_fleet(elevators=5, meters=5, units_per_port=4)
    placements = fleet.placements()
    assert len({p.port for p in placements}) == 3
    assert sorted(p.unit for p in placements if p.port == placements[0].port) == [1, 2, 3, 4]
    fleet.inject("lift-0003", "alarm_button")
    shown = {p.device_id: fleet.read(p.device_id) for p in placements if p.kind == "elevator"}
    assert [shown[f"lift-{n:04d}"]["alarm_button"] for n in range(1, 6)] == [0, 0, 1, 0, 0]
