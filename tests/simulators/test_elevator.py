"""Elevator physics on a FakeClock: calls, runs, doors, trips, inspection, and the lockout (M6)."""

from __future__ import annotations

import pytest

from simulators.elevator import Elevator, LiftTimings, Phase
from simulators.models import CommandRefused, Fault, FaultNotSupported
from vigil.catalog import CarStatus, Direction, DoorState, FaultCode, LockoutState, ServiceMode
from vigil.clock import FakeClock
from vigil.profiles import Table

T = LiftTimings()
REQUEST = 0x0100  # out-of-service request register (holding)


def lift(clock: FakeClock, **options) -> Elevator:
    return Elevator(device_id="lift-t", clock=clock, highest=10, **options)


def run_time(floors: int) -> float:
    return T.start_stop_s + T.per_floor_s * floors


def door_cycle() -> float:
    return T.door_open_s + T.dwell_s + T.door_close_s


def test_a_new_lift_is_idle_at_the_lowest_floor(clock):
    values = lift(clock).values()
    assert values["service_mode"] == ServiceMode.NORMAL
    assert values["floor"] == 1 and values["door_zone"] == 1
    assert values["door_state"] == DoorState.CLOSED and values["car_status"] == CarStatus.STOPPED
    assert values["lockout_state"] == LockoutState.NONE and values["fault_code"] == FaultCode.NONE


def test_a_hall_call_is_answered_with_a_run_a_door_cycle_and_a_ride(clock):
    car = lift(clock)
    car.hall_call(floor=5, destination=2)
    clock.advance(run_time(4) / 2)
    moving = car.values()
    assert moving["car_status"] == CarStatus.RUNNING and moving["direction"] == Direction.UP
    assert 1 <= moving["floor"] < 5
    clock.advance(run_time(4) / 2)
    arrived = car.values()
    assert arrived["floor"] == 5 and arrived["car_status"] == CarStatus.STOPPED
    assert arrived["door_state"] == DoorState.OPENING and arrived["trip_count"] == 1
    clock.advance(T.door_open_s)
    boarded = car.values()
    assert boarded["door_state"] == DoorState.OPEN and boarded["passengers"] == 1
    clock.advance(T.dwell_s + T.door_close_s + run_time(3) / 2)
    assert car.values()["direction"] == Direction.DOWN
    clock.advance(run_time(3) / 2 + T.door_open_s)
    done = car.values()
    assert done["floor"] == 2 and done["passengers"] == 0 and done["trip_count"] == 2
    clock.advance(T.dwell_s + T.door_close_s)
    assert car.values()["door_state"] == DoorState.CLOSED
    hours = car.running_s / 3600
    assert hours == pytest.approx((run_time(4) + run_time(3)) / 3600)


def test_random_traffic_is_deterministic_for_a_seed():
    def trips(seed: int) -> int:
        clock = FakeClock()
        car = lift(clock, traffic_per_hour=30, seed=seed)
        for _ in range(24):
            clock.advance(3600)
            car.values()
        return car.trip_count

    assert trips(1) == trips(1) > 100
    one_jump = FakeClock()
    car = lift(one_jump, traffic_per_hour=30, seed=1)
    one_jump.advance(24 * 3600)
    assert car.values()["trip_count"] == trips(1)  # polled hourly or once: the same history


def test_the_alarm_selftest_runs_daily_and_can_go_missing(clock):
    car = lift(clock)
    start = car.values()["alarm_selftest_at"]
    clock.advance(86_400)
    assert car.values()["alarm_selftest_at"] == start + 86_400
    car.inject(Fault.MISSING_SELFTEST)
    clock.advance(4 * 86_400)
    assert car.values()["alarm_selftest_at"] == start + 86_400  # rule M11: no test for 4 days
    car.clear(Fault.MISSING_SELFTEST)
    assert car.values()["alarm_selftest_at"] == start + 5 * 86_400


def test_a_maintenance_visit_uses_inspection_mode_and_both_stations(clock):
    car = lift(clock)
    car.maintenance_visit(duration_s=1800)
    seen = []
    for _ in range(30):
        values = car.values()
        seen.append(
            (values["service_mode"], values["car_top_inspection"], values["pit_inspection"])
        )
        clock.advance(60)
    assert all(mode == ServiceMode.INSPECTION for mode, _, _ in seen)  # rule M3 evidence
    assert any(top for _, top, _ in seen) and any(pit for _, _, pit in seen)
    assert car.values()["service_mode"] == ServiceMode.NORMAL
    assert car.values()["car_top_inspection"] == 0 and car.values()["pit_inspection"] == 0


def test_calls_wait_during_inspection(clock):
    car = lift(clock)
    car.start_inspection()
    car.hall_call(floor=4, destination=1)
    clock.advance(120)
    assert car.values()["floor"] == 1 and car.values()["fault_code"] == FaultCode.INSPECTION
    car.end_inspection()
    clock.advance(run_time(3))
    assert car.values()["floor"] == 4


# -- the lockout (rule M6) ------------------------------------------------------------------------


def request_lockout(car: Elevator) -> None:
    car.write(table=Table.HOLDING, address=REQUEST, words=[1])


def park_open(car: Elevator, clock: FakeClock) -> None:
    """Bring the car to floor 3 with its doors open and nobody inside."""
    car.hall_call(floor=1, destination=3)  # a passenger rides from 1 to 3 and gets out
    clock.advance(door_cycle() + run_time(2) + T.door_open_s)
    values = car.values()
    assert (values["floor"], values["door_state"], values["passengers"]) == (3, DoorState.OPEN, 0)


def test_lockout_applies_at_once_when_idle_in_a_door_zone_open_and_empty(clock):
    car = lift(clock)
    park_open(car, clock)
    request_lockout(car)
    values = car.values()
    assert values["lockout_state"] == LockoutState.APPLIED
    assert values["service_mode"] == ServiceMode.OUT_OF_SERVICE
    assert values["fault_code"] == FaultCode.OUT_OF_SERVICE
    clock.advance(T.dwell_s + T.door_close_s)
    # parked out of service with its doors open: nobody can be shut in (rule M6)
    assert car.values()["door_state"] == DoorState.OPEN
    car.hall_call(floor=6, destination=1)
    clock.advance(600)
    assert car.values()["floor"] == 3 and car.trip_count == 1  # no service while locked out
    assert car.values()["door_state"] == DoorState.OPEN


def test_lockout_waits_while_the_car_is_moving(clock):
    car = lift(clock)
    car.hall_call(floor=8, destination=1)
    clock.advance(run_time(7) / 2)
    assert car.values()["car_status"] == CarStatus.RUNNING
    request_lockout(car)
    assert car.values()["lockout_state"] == LockoutState.PENDING
    assert car.values()["car_status"] == CarStatus.RUNNING  # never interrupts a trip
    clock.advance(run_time(7) / 2)
    assert car.values()["lockout_state"] == LockoutState.PENDING  # arrived, doors still opening
    clock.advance(T.door_open_s)
    values = car.values()
    assert values["floor"] == 8 and values["door_state"] == DoorState.OPEN
    assert values["lockout_state"] == LockoutState.APPLIED  # caller did not board: car empty


def test_lockout_waits_while_the_car_is_occupied(clock):
    car = lift(clock)
    park_open(car, clock)
    car.set_occupied(True)
    request_lockout(car)
    assert car.values()["lockout_state"] == LockoutState.PENDING
    clock.advance(3600)  # the doors stay open while somebody is inside
    values = car.values()
    assert values["lockout_state"] == LockoutState.PENDING
    assert values["door_state"] == DoorState.OPEN
    car.set_occupied(False)
    assert car.values()["lockout_state"] == LockoutState.APPLIED


def test_lockout_waits_while_the_doors_are_closed(clock):
    car = lift(clock)
    assert car.values()["door_state"] == DoorState.CLOSED
    request_lockout(car)
    assert car.values()["lockout_state"] == LockoutState.PENDING
    clock.advance(T.door_open_s / 2)
    assert car.values()["door_state"] == DoorState.OPENING
    assert car.values()["lockout_state"] == LockoutState.PENDING
    clock.advance(T.door_open_s / 2)
    assert car.values()["lockout_state"] == LockoutState.APPLIED  # opened to park: now safe


def test_lockout_waits_while_the_car_is_outside_a_door_zone(clock):
    car = lift(clock)
    car.hall_call(floor=6, destination=1)
    clock.advance(run_time(5) / 2)
    car.inject(Fault.POWER_LOSS)  # the car stops between floors, empty
    values = car.values()
    assert values["door_zone"] == 0 and values["car_status"] == CarStatus.STOPPED
    request_lockout(car)
    clock.advance(600)
    assert car.values()["lockout_state"] == LockoutState.PENDING
    car.clear(Fault.POWER_LOSS)  # relevels at the nearest landing and opens
    assert car.values()["lockout_state"] == LockoutState.PENDING
    clock.advance(T.door_open_s)
    values = car.values()
    assert values["door_zone"] == 1 and values["lockout_state"] == LockoutState.APPLIED


def test_the_safety_predicate_needs_every_condition(clock):
    car = lift(clock)
    park_open(car, clock)
    assert car.lockout_is_safe()
    car.position = 3.4  # doors open outside a door zone cannot happen, but must never pass
    assert not car.lockout_is_safe()
    car.position = 3.0
    car.phase = Phase.MOVING
    assert not car.lockout_is_safe()
    car.phase = Phase.CLOSING
    assert not car.lockout_is_safe()
    car.phase = Phase.OPEN
    car.occupied = True
    assert not car.lockout_is_safe()


def test_lockout_never_applies_to_a_trapped_car(clock):
    car = lift(clock)
    car.inject(Fault.ENTRAPMENT_AT_FLOOR)
    request_lockout(car)
    clock.advance(3600)
    assert car.values()["lockout_state"] == LockoutState.PENDING
    car.clear(Fault.ENTRAPMENT_AT_FLOOR)  # rescued: doors open, passengers out
    clock.advance(T.door_open_s)
    assert car.values()["lockout_state"] == LockoutState.APPLIED


def test_release_returns_the_lift_to_service(clock):
    car = lift(clock)
    park_open(car, clock)
    request_lockout(car)
    assert car.values()["lockout_state"] == LockoutState.APPLIED
    car.write(table=Table.HOLDING, address=REQUEST, words=[0])
    values = car.values()
    assert values["lockout_state"] == LockoutState.NONE
    assert values["service_mode"] == ServiceMode.NORMAL
    car.hall_call(floor=5, destination=1)
    clock.advance(door_cycle() + run_time(2) + 1)
    assert car.values()["floor"] == 5


def test_a_pending_lockout_takes_no_new_calls_but_delivers_riders(clock):
    car = lift(clock)
    car.hall_call(floor=1, destination=9)
    clock.advance(T.door_open_s + 1)  # the caller boards at floor 1
    request_lockout(car)
    car.hall_call(floor=4, destination=2)
    clock.advance(T.dwell_s + T.door_close_s + run_time(8) + T.door_open_s)
    values = car.values()
    assert values["floor"] == 9 and values["lockout_state"] == LockoutState.APPLIED
    assert car.trip_count == 1  # went straight to 9, floor 4 was not served


def test_only_documented_values_may_be_written(clock):
    car = lift(clock)
    with pytest.raises(CommandRefused):
        car.write(table=Table.HOLDING, address=REQUEST, words=[7])
    with pytest.raises(CommandRefused):
        car.write(table=Table.HOLDING, address=0x0101, words=[1])
    assert car.values()["lockout_state"] == LockoutState.NONE


def test_a_lift_has_no_lamp_faults(clock):
    with pytest.raises(FaultNotSupported):
        lift(clock).inject(Fault.LAMP_FAILURE)


def test_a_locked_out_car_shows_inspection_during_a_visit_and_stays_locked(clock):
    car = lift(clock)
    park_open(car, clock)
    request_lockout(car)
    assert car.values()["service_mode"] == ServiceMode.OUT_OF_SERVICE
    car.maintenance_visit(duration_s=1800)
    clock.advance(900)
    values = car.values()
    assert values["service_mode"] == ServiceMode.INSPECTION  # rule M3 evidence still visible
    assert values["fault_code"] == FaultCode.INSPECTION
    assert values["lockout_state"] == LockoutState.APPLIED  # released only by the platform (M6)
    clock.advance(900)
    values = car.values()
    assert values["service_mode"] == ServiceMode.OUT_OF_SERVICE
    assert values["lockout_state"] == LockoutState.APPLIED
