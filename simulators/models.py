"""Types shared by every simulated device: faults, the device base class and its agenda.

A simulated device computes its state lazily from its clock: whenever it is read, written or
given a fault it first catches up to ``clock.now()``, stepping through its own events (door
cycles, arrivals, dusk and dawn) and its agenda (scheduled actions) in time order. The same
clock readings therefore always give the same registers, however often they are polled.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from vigil.clock import Clock
from vigil.profiles import CommandPoint, Profile, Table, decode_value
from vigil.wire import CommandAction

DAY_S = 86_400.0


class Fault(StrEnum):
    """Faults the simulators can inject (docs/simulators.md lists what each one shows)."""

    ENTRAPMENT_BETWEEN_FLOORS = "entrapment_between_floors"
    ENTRAPMENT_AT_FLOOR = "entrapment_at_floor"
    DOOR_FAULT = "door_fault"
    ALARM_BUTTON = "alarm_button"
    POWER_LOSS = "power_loss"
    COMM_LOSS = "comm_loss"
    LAMP_FAILURE = "lamp_failure"
    MAST_LAMPS_OUT = "mast_lamps_out"
    REVERSE_ENERGY = "reverse_energy"
    REVERSE_FLOW = "reverse_flow"
    VOLTAGE_SAG = "voltage_sag"
    COUNTER_RESET = "counter_reset"
    MISSING_SELFTEST = "missing_selftest"


# Faults that happen once and leave nothing to clear.
ONE_SHOT_FAULTS = frozenset({Fault.COUNTER_RESET})


class FaultNotSupported(ValueError):
    """The device model has no such fault."""


class CommandRefused(ValueError):
    """A write the device does not accept (wrong address, value out of range)."""


@dataclass(order=True)
class _Scheduled:
    at: datetime
    order: int
    action: Callable[[], None] = field(compare=False)


class SimulatedDevice:
    """Base of every simulated device: clock catch-up, agenda, faults and command writes."""

    supported_faults: ClassVar[frozenset[Fault]] = frozenset(
        {Fault.POWER_LOSS, Fault.COMM_LOSS, Fault.COUNTER_RESET}
    )

    def __init__(self, *, device_id: str, clock: Clock, profile: Profile, seed: int = 0) -> None:
        self.device_id = device_id
        self.clock = clock
        self.profile = profile
        self.seed = seed
        self.faults: dict[Fault, dict[str, Any]] = {}
        self._t = clock.now()
        self._agenda: list[_Scheduled] = []
        self._order = itertools.count()

    # -- time ------------------------------------------------------------------------------------

    @property
    def comm_lost(self) -> bool:
        """True while the device does not answer (communication loss)."""
        return Fault.COMM_LOSS in self.faults

    @property
    def powered(self) -> bool:
        """False during a power loss."""
        return Fault.POWER_LOSS not in self.faults

    def sync(self) -> None:
        """Catch up with the clock, firing every due event and agenda entry in time order."""
        now = self.clock.now()
        for _ in range(1_000_000):  # a model whose next event never moves on is a bug
            model_due = self._next_event()
            agenda_due = self._agenda[0].at if self._agenda else None
            due = min((d for d in (model_due, agenda_due) if d is not None), default=None)
            if due is None or due > now:
                break
            due = max(due, self._t)
            self._integrate(until=due)
            self._t = due
            if agenda_due is not None and agenda_due <= due:
                heapq.heappop(self._agenda).action()
            else:
                self._fire(at=due)
        else:  # pragma: no cover - defensive
            raise RuntimeError(f"{self.device_id}: events do not advance")
        if now > self._t:
            self._integrate(until=now)
            self._t = now

    def schedule(self, *, at: datetime, action: Callable[[], None]) -> None:
        """Run ``action`` when the device's time reaches ``at``."""
        heapq.heappush(self._agenda, _Scheduled(at, next(self._order), action))

    def later(self, seconds: float) -> datetime:
        """The device time ``seconds`` from now."""
        return self._t + timedelta(seconds=seconds)

    # -- reading ---------------------------------------------------------------------------------

    def values(self) -> dict[str, float]:
        """Every metric of the profile, as the device shows it now."""
        self.sync()
        return self._values()

    def identity(self) -> dict[str, str]:
        """Identity strings (serial number...), by profile identity name."""
        serial = f"SIM-{self.device_id}"
        return {point.name: serial[: point.length or 0] for point in self.profile.identity}

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, fault: Fault | str, *, duration_s: float | None = None, **params: Any) -> None:
        """Start ``fault`` (cleared after ``duration_s`` when given)."""
        fault = Fault(fault)
        if fault not in self.supported_faults:
            raise FaultNotSupported(f"{self.profile.kind} {self.device_id} has no fault {fault}")
        self.sync()
        if fault not in ONE_SHOT_FAULTS:
            self.faults[fault] = params
        self._fault_started(fault, params)
        if duration_s is not None and fault not in ONE_SHOT_FAULTS:
            self.schedule(at=self.later(duration_s), action=lambda: self._clear_now(fault))

    def clear(self, fault: Fault | str) -> None:
        """End ``fault`` (nothing happens when it is not active)."""
        self.sync()
        self._clear_now(Fault(fault))

    def _clear_now(self, fault: Fault) -> None:
        if self.faults.pop(fault, None) is not None:
            self._fault_cleared(fault)

    # -- commands --------------------------------------------------------------------------------

    def write(self, *, table: Table, address: int, words: list[int]) -> None:
        """Apply a Modbus write; CommandRefused when the device does not accept it."""
        self.sync()
        for point in self.profile.commands:
            if point.table is table and point.address == address and len(words) == point.count:
                value = float(decode_value(words, point=point))
                if point.value is None or point.value == value:
                    self._command_checked(point, value=value)
                    return
        raise CommandRefused(f"{self.device_id}: nothing writable takes {words} at {address}")

    def command(self, action: CommandAction | str, *, value: float | None = None) -> None:
        """Apply a platform command directly (as if its register had been written)."""
        self.sync()
        point = self.profile.command(action)
        self._command_checked(point, value=point.value if point.value is not None else value)

    def _command_checked(self, point: CommandPoint, *, value: float | None) -> None:
        if value is None or (point.min is not None and value < point.min):
            raise CommandRefused(f"{point.action} value {value} below {point.min}")
        if point.max is not None and value > point.max:
            raise CommandRefused(f"{point.action} value {value} above {point.max}")
        self._apply_command(CommandAction(point.action), value=value)

    # -- what a model provides -------------------------------------------------------------------

    def _next_event(self) -> datetime | None:
        """When the model's next own event is due (None: nothing pending)."""
        return None

    def _fire(self, *, at: datetime) -> None:
        """Handle the model's own event due at ``at``."""

    def _integrate(self, *, until: datetime) -> None:
        """Accumulate continuous quantities (energy, hours) from the device time to ``until``."""

    def _values(self) -> dict[str, float]:
        raise NotImplementedError

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        """React to a fault that has just been injected."""

    def _fault_cleared(self, fault: Fault) -> None:
        """React to a fault that has just ended."""

    def _apply_command(self, action: CommandAction, *, value: float) -> None:
        raise CommandRefused(f"{self.device_id} takes no {action} command")


def jitter(*, seed: int, key: str, at: datetime, period_s: float = 60.0) -> float:
    """A deterministic pseudo-random number in [-1, 1) for ``key`` during one period."""
    slot = int(at.timestamp() // period_s)
    digest = hashlib.blake2b(f"{seed}:{key}:{slot}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**31 - 1.0


@dataclass(frozen=True, slots=True)
class DailyProfile:
    """A smooth daily curve ``mean + a1 cos(2pi(h - p1)/24) + a2 cos(4pi(h - p2)/24)``.

    Hours are local (UTC + ``utc_offset_h``). Its integral has a closed form, so energy and
    volume stay exact over any jump of the clock.
    """

    mean: float
    a1: float = 0.0
    p1_h: float = 0.0
    a2: float = 0.0
    p2_h: float = 0.0
    utc_offset_h: float = 8.0

    def at(self, when: datetime) -> float:
        """Value of the curve at ``when``."""
        h = self._hours(when)
        return (
            self.mean
            + self.a1 * math.cos(2 * math.pi * (h - self.p1_h) / 24)
            + self.a2 * math.cos(4 * math.pi * (h - self.p2_h) / 24)
        )

    def integral_h(self, start: datetime, end: datetime) -> float:
        """Integral of the curve over [start, end], in value x hours."""
        return self._antiderivative(self._hours(end)) - self._antiderivative(self._hours(start))

    def _hours(self, when: datetime) -> float:
        return when.timestamp() / 3600 + self.utc_offset_h

    def _antiderivative(self, h: float) -> float:
        w1, w2 = 2 * math.pi / 24, 4 * math.pi / 24
        return (
            self.mean * h
            + self.a1 / w1 * math.sin(w1 * (h - self.p1_h))
            + self.a2 / w2 * math.sin(w2 * (h - self.p2_h))
        )
