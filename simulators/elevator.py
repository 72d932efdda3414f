"""A traction lift controller: hall calls, runs, door cycles, inspection visits and the lockout.

The car serves passenger journeys (a hall call from one floor to another): it runs to the
caller's floor, opens its doors (passengers alight and board), closes them and runs on. Each
run counts as a trip and adds to the motor's running hours. The registers follow the
``lift-controller`` profile (docs/register-maps.md).

The out-of-service request (rule M6) is applied only when the car is idle in a door zone with
its doors open and nobody inside; until then ``lockout_state`` reads pending, the car takes no
new calls, delivers whoever is aboard, and parks with its doors open so the lockout can apply.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from simulators.models import DailyProfile, Fault, SimulatedDevice
from vigil.catalog import CarStatus, Direction, DoorState, FaultCode, LockoutState, ServiceMode
from vigil.clock import Clock
from vigil.profiles import Profile, builtin_profile
from vigil.wire import CommandAction

LEVEL_TOLERANCE = 0.05  # floors: within this of a landing the car is in its door zone


class Phase(StrEnum):
    """What the car is doing."""

    IDLE = "idle"  # stopped at a landing, doors closed
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    MOVING = "moving"
    HALTED = "halted"  # stopped by a fault (entrapment, power loss)


@dataclass(frozen=True, slots=True)
class LiftTimings:
    """Realistic durations in seconds (a 1.0-1.6 m/s lift, 3 m floors)."""

    door_open_s: float = 2.5
    dwell_s: float = 5.0
    door_close_s: float = 3.0
    start_stop_s: float = 4.0  # acceleration and levelling per run
    per_floor_s: float = 2.5


@dataclass(slots=True)
class Journey:
    """A passenger's ride from ``origin`` to ``destination``."""

    origin: int
    destination: int
    riding: bool = False


# Everyday traffic: quiet at night, peaks in the morning and the evening (local time).
TRAFFIC_PROFILE = DailyProfile(mean=1.0, a1=0.7, p1_h=14.0, a2=0.3, p2_h=8.5)


class Elevator(SimulatedDevice):
    """A simulated lift controller."""

    supported_faults = SimulatedDevice.supported_faults | {
        Fault.ENTRAPMENT_BETWEEN_FLOORS,
        Fault.ENTRAPMENT_AT_FLOOR,
        Fault.DOOR_FAULT,
        Fault.ALARM_BUTTON,
        Fault.MISSING_SELFTEST,
    }

    def __init__(
        self,
        *,
        device_id: str,
        clock: Clock,
        profile: Profile | None = None,
        seed: int = 0,
        lowest: int = 1,
        highest: int = 10,
        home: int | None = None,
        traffic_per_hour: float = 0.0,
        timings: LiftTimings = LiftTimings(),
        selftest_period_s: float = 86_400.0,
    ) -> None:
        super().__init__(
            device_id=device_id,
            clock=clock,
            profile=profile or builtin_profile("lift-controller"),
            seed=seed,
        )
        if not lowest < highest:
            raise ValueError("a lift needs at least two floors")
        self.lowest, self.highest = lowest, highest
        self.timings = timings
        self.position = float(home if home is not None else lowest)
        self.phase = Phase.IDLE
        self.phase_until: datetime | None = None
        self.run_from = self.run_to = int(self.position)
        self.run_started = self._t
        self.halted_doors = DoorState.CLOSED
        self.journeys: list[Journey] = []
        self.occupied = False  # somebody in the car who is not on a journey (tests, entrapments)
        self.inspection = False
        self.car_top = False
        self.pit = False
        self.lockout_requested = False
        self.lockout_applied = False
        self.trip_count = 0
        self.running_s = 0.0
        self.selftest_period_s = selftest_period_s
        self.selftest_at = self._t  # commissioned with a passed self-test
        self._next_selftest = self.later(selftest_period_s)
        self.traffic_per_hour = traffic_per_hour
        self._rng = random.Random(f"{seed}:{device_id}")
        self._next_call = self._draw_next_call() if traffic_per_hour > 0 else None

    # -- what the registers show ---------------------------------------------------------------

    @property
    def moving(self) -> bool:
        """True while the car runs."""
        return self.phase is Phase.MOVING

    @property
    def passengers(self) -> bool:
        """True when somebody is in the car."""
        return self.occupied or any(j.riding for j in self.journeys)

    @property
    def in_door_zone(self) -> bool:
        """True when the car is level with a landing (within the unlocking zone)."""
        position = self._position_now()
        return abs(position - round(position)) <= LEVEL_TOLERANCE

    @property
    def door_state(self) -> DoorState:
        """The car door as the controller reports it."""
        if self.phase is Phase.HALTED:
            return self.halted_doors
        return {
            Phase.OPENING: DoorState.OPENING,
            Phase.OPEN: DoorState.OPEN,
            Phase.CLOSING: DoorState.CLOSING,
        }.get(self.phase, DoorState.CLOSED)

    @property
    def service_mode(self) -> ServiceMode:
        """GB/T 24476 service mode."""
        if not self.powered:
            return ServiceMode.EMERGENCY_POWER
        # Inspection operation overrides: a technician works on a locked-out lift this way.
        if self.inspection:
            return ServiceMode.INSPECTION
        if self.lockout_applied:
            return ServiceMode.OUT_OF_SERVICE
        return ServiceMode.NORMAL

    @property
    def lockout_state(self) -> LockoutState:
        """What the controller says about the out-of-service request (rule M6)."""
        if self.lockout_applied:
            return LockoutState.APPLIED
        return LockoutState.PENDING if self.lockout_requested else LockoutState.NONE

    @property
    def fault_code(self) -> FaultCode:
        """The most serious active fault, GB/T 24476 numbering."""
        if Fault.ENTRAPMENT_BETWEEN_FLOORS in self.faults:
            return FaultCode.STOPPED_OUTSIDE_UNLOCKING_ZONE
        if Fault.ENTRAPMENT_AT_FLOOR in self.faults:
            return FaultCode.DOOR_OPEN_FAULT
        if not self.powered:
            return FaultCode.MAIN_POWER_OFF
        if Fault.DOOR_FAULT in self.faults:
            return FaultCode.DOOR_CLOSE_FAULT
        if self.inspection:
            return FaultCode.INSPECTION
        if self.lockout_applied:
            return FaultCode.OUT_OF_SERVICE
        if Fault.ALARM_BUTTON in self.faults:
            return FaultCode.ALARM_BUTTON
        return FaultCode.NONE

    @property
    def floor(self) -> int:
        """The landing the car is at, or the last one it passed."""
        position = self._position_now()
        if abs(position - round(position)) <= LEVEL_TOLERANCE:
            return round(position)
        going_down = self.moving and self.run_to < self.run_from
        return math.ceil(position) if going_down else math.floor(position)

    def _values(self) -> dict[str, float]:
        moving = self.moving
        direction = Direction.NONE
        if moving:
            direction = Direction.UP if self.run_to > self.run_from else Direction.DOWN
        return {
            "service_mode": self.service_mode,
            "car_status": CarStatus.RUNNING if moving else CarStatus.STOPPED,
            "direction": direction,
            "door_zone": 1 if self.in_door_zone else 0,
            "floor": self.floor,
            "door_state": self.door_state,
            "passengers": 1 if self.passengers else 0,
            "alarm_button": 1 if Fault.ALARM_BUTTON in self.faults else 0,
            "fault_code": self.fault_code,
            "car_top_inspection": 1 if self.car_top else 0,
            "pit_inspection": 1 if self.pit else 0,
            "lockout_state": self.lockout_state,
            "trip_count": self.trip_count,
            "running_hours": round(self.running_s / 3600, 1),
            "alarm_selftest_at": int(self.selftest_at.timestamp()),
        }

    # -- people and technicians ----------------------------------------------------------------

    def hall_call(self, *, floor: int, destination: int) -> None:
        """A passenger at ``floor`` calls the car to ride to ``destination``."""
        for stop in (floor, destination):
            if not self.lowest <= stop <= self.highest:
                raise ValueError(f"floor {stop} is outside {self.lowest}..{self.highest}")
        if floor == destination:
            raise ValueError("a journey needs two different floors")
        self.sync()
        self.journeys.append(Journey(floor, destination))
        self._settle()

    def set_occupied(self, occupied: bool) -> None:
        """Somebody steps into (True) or out of (False) the car, outside any journey."""
        self.sync()
        self.occupied = occupied
        self._settle()

    def start_inspection(self) -> None:
        """A technician switches the controller to inspection (maintenance visit, rule M3)."""
        self.sync()
        self.inspection = True
        self._settle()

    def set_stations(self, *, car_top: bool | None = None, pit: bool | None = None) -> None:
        """Switch the car-top and/or pit inspection stations on or off."""
        self.sync()
        if car_top is not None:
            self.car_top = car_top
        if pit is not None:
            self.pit = pit

    def end_inspection(self) -> None:
        """Back to normal service after a visit."""
        self.sync()
        self.inspection = self.car_top = self.pit = False
        self._settle()

    def maintenance_visit(
        self, *, duration_s: float = 1800.0, car_top: bool = True, pit: bool = True
    ) -> None:
        """A whole visit from now: inspection mode, then the car-top and the pit stations."""
        self.start_inspection()
        if car_top:
            self.schedule(at=self.later(0.1 * duration_s), action=lambda: self._station(top=True))
            self.schedule(at=self.later(0.45 * duration_s), action=lambda: self._station(top=False))
        if pit:
            self.schedule(at=self.later(0.55 * duration_s), action=lambda: self._station(pit=True))
            self.schedule(at=self.later(0.9 * duration_s), action=lambda: self._station(pit=False))
        self.schedule(at=self.later(duration_s), action=self._end_visit)

    def _station(self, *, top: bool | None = None, pit: bool | None = None) -> None:
        if top is not None:
            self.car_top = top
        if pit is not None:
            self.pit = pit

    def _end_visit(self) -> None:
        self.inspection = self.car_top = self.pit = False
        self._settle()

    # -- commands: the out-of-service request (rule M6) -------------------------------------------

    def _apply_command(self, action: CommandAction, *, value: float) -> None:
        if action is CommandAction.LOCKOUT:
            self.lockout_requested = True
        elif action is CommandAction.RELEASE:
            self.lockout_requested = False
            self.lockout_applied = False
        self._settle()

    def lockout_is_safe(self) -> bool:
        """True when the car is idle in a door zone, doors open and nobody inside (rule M6)."""
        return (
            self.phase is Phase.OPEN
            and self.in_door_zone
            and not self.passengers
            and self.powered
            and not self.inspection
            and not self._trapped()
        )

    def _trapped(self) -> bool:
        return bool(
            {Fault.ENTRAPMENT_BETWEEN_FLOORS, Fault.ENTRAPMENT_AT_FLOOR} & self.faults.keys()
        )

    # -- faults --------------------------------------------------------------------------------

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.ENTRAPMENT_BETWEEN_FLOORS:
            position = self._position_now()
            if abs(position - round(position)) < 0.2:
                offset = -0.45 if round(position) >= self.highest else 0.45
                position = round(position) + offset
            self._halt(position=position, doors=DoorState.CLOSED)
            self.occupied = True
        elif fault is Fault.ENTRAPMENT_AT_FLOOR:
            self._halt(position=float(round(self._position_now())), doors=DoorState.CLOSED)
            self.occupied = True
        elif fault is Fault.POWER_LOSS:
            self._halt(position=self._position_now(), doors=self.door_state)
        elif fault is Fault.DOOR_FAULT and self.phase in (Phase.IDLE, Phase.CLOSING, Phase.OPEN):
            self._set_phase(Phase.OPEN, None)  # doors swing open and will not close
        elif fault is Fault.COUNTER_RESET:
            self.trip_count, self.running_s = 0, 0.0
        self._settle()

    def _fault_cleared(self, fault: Fault) -> None:
        if fault in (Fault.ENTRAPMENT_BETWEEN_FLOORS, Fault.ENTRAPMENT_AT_FLOOR):
            self.occupied = False  # rescued: everybody aboard gets out
            self.journeys = [j for j in self.journeys if not j.riding]
            self._release_halt()
        elif fault is Fault.POWER_LOSS and not self._trapped():
            self._release_halt()
        elif fault is Fault.DOOR_FAULT and self.phase is Phase.OPEN:
            self._set_phase(Phase.CLOSING, self.later(self.timings.door_close_s))
        elif fault is Fault.MISSING_SELFTEST:
            self.selftest_at = self._t
            self._next_selftest = self.later(self.selftest_period_s)
        self._settle()

    def _halt(self, *, position: float, doors: DoorState) -> None:
        self.position = position
        self.halted_doors = doors
        self._set_phase(Phase.HALTED, None)

    def _release_halt(self) -> None:
        if self._trapped() or not self.powered:
            return
        at_landing = abs(self.position - round(self.position)) <= LEVEL_TOLERANCE
        self.position = float(round(self.position))  # relevel at the nearest landing
        if at_landing and self.halted_doors is DoorState.CLOSED and not self.passengers:
            self._set_phase(Phase.IDLE, None)
        else:
            self._set_phase(Phase.OPENING, self.later(self.timings.door_open_s))

    # -- the event loop ------------------------------------------------------------------------

    def _next_event(self) -> datetime | None:
        due = [self._next_selftest]
        if self.phase_until is not None:
            due.append(self.phase_until)
        if self._next_call is not None:
            due.append(self._next_call)
        return min(due)

    def _fire(self, *, at: datetime) -> None:
        if self._next_selftest <= at:
            if Fault.MISSING_SELFTEST not in self.faults:
                self.selftest_at = at  # rule M11: the automatic test passed
            self._next_selftest = self.later(self.selftest_period_s)
        elif self._next_call is not None and self._next_call <= at:
            self._next_call = self._draw_next_call()
            self._random_journey()
        elif self.phase_until is not None and self.phase_until <= at:
            self._end_phase()
        self._settle()

    def _integrate(self, *, until: datetime) -> None:
        if self.moving:
            self.running_s += (until - self._t).total_seconds()

    def _end_phase(self) -> None:
        timings = self.timings
        if self.phase is Phase.MOVING:
            self.position = float(self.run_to)
            self.trip_count += 1
            self._set_phase(Phase.OPENING, self.later(timings.door_open_s))
        elif self.phase is Phase.OPENING:
            self._exchange_passengers()
            self._set_phase(Phase.OPEN, self.later(timings.dwell_s))
        elif self.phase is Phase.OPEN:
            if Fault.DOOR_FAULT in self.faults:
                self._set_phase(Phase.OPEN, None)  # the doors fail to close
            elif self._parking_for_lockout():
                self._set_phase(Phase.OPEN, None)  # park open until the lockout can apply
            else:
                self._set_phase(Phase.CLOSING, self.later(timings.door_close_s))
        elif self.phase is Phase.CLOSING:
            self._set_phase(Phase.IDLE, None)

    def _settle(self) -> None:
        """Apply a pending lockout when safe, and give an idle car its next job."""
        if self.lockout_requested and not self.lockout_applied and self.lockout_is_safe():
            self.lockout_applied = True  # rule M6: idle, door zone, doors open, car empty
            self._set_phase(Phase.OPEN, None)  # parked open while out of service
        if self.phase is Phase.OPEN and self.phase_until is None and self._can_close():
            self._set_phase(Phase.OPEN, self.later(self.timings.dwell_s))
        if self.phase is Phase.IDLE:
            self._dispatch()

    def _can_close(self) -> bool:
        return Fault.DOOR_FAULT not in self.faults and not self._parking_for_lockout()

    def _parking_for_lockout(self) -> bool:
        """A pending lockout keeps the doors open once nobody aboard has somewhere to go; an
        applied one keeps them open (out of service: nobody can be shut in the car, and the
        platform sees the state the lockout was applied in, rule M6)."""
        return self.lockout_applied or (self.lockout_requested and not self._stops())

    def _dispatch(self) -> None:
        if not self.powered or self.lockout_applied or self._trapped():
            return
        here = round(self.position)
        stops = self._stops()
        if here in stops or (self.lockout_requested and not stops and not self.inspection):
            # Open here: for a passenger, or to park for the pending lockout.
            self._set_phase(Phase.OPENING, self.later(self.timings.door_open_s))
            return
        if not stops or self.inspection:
            return
        target = min(stops, key=lambda floor: (abs(floor - here), floor))
        self.run_from, self.run_to, self.run_started = here, target, self._t
        travel = self.timings.start_stop_s + self.timings.per_floor_s * abs(target - here)
        self._set_phase(Phase.MOVING, self.later(travel))

    def _stops(self) -> set[int]:
        riding = {j.destination for j in self.journeys if j.riding}
        if self.lockout_requested:
            return riding  # a pending lockout delivers whoever is aboard, takes no new calls
        return riding | {j.origin for j in self.journeys if not j.riding}

    def _exchange_passengers(self) -> None:
        here = round(self.position)
        self.journeys = [j for j in self.journeys if not (j.riding and j.destination == here)]
        if self.lockout_requested or self.inspection:
            return
        for journey in self.journeys:
            if journey.origin == here:
                journey.riding = True

    def _set_phase(self, phase: Phase, until: datetime | None) -> None:
        self.phase, self.phase_until = phase, until

    def _position_now(self) -> float:
        if not self.moving:
            return self.position
        elapsed = (self._t - self.run_started).total_seconds() - self.timings.start_stop_s / 2
        floors = max(0.0, elapsed) / self.timings.per_floor_s
        span = abs(self.run_to - self.run_from)
        step = min(floors, float(span))
        return self.run_from + step if self.run_to > self.run_from else self.run_from - step

    # -- random traffic ------------------------------------------------------------------------

    def _draw_next_call(self) -> datetime:
        rate_per_s = max(0.05, TRAFFIC_PROFILE.at(self._t)) * self.traffic_per_hour / 3600
        return self.later(self._rng.expovariate(rate_per_s))

    def _random_journey(self) -> None:
        if len(self.journeys) >= 8:  # the lobby is full; callers give up
            return
        floors = list(range(self.lowest, self.highest + 1))
        origin = self.lowest if self._rng.random() < 0.5 else self._rng.choice(floors)
        destination = self._rng.choice([f for f in floors if f != origin])
        self.journeys.append(Journey(origin, destination))
