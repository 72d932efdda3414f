"""A water meter with a shut-off valve, little-endian registers and a daily demand curve.

Volumes are the exact integral of the flow; a reverse-flow fault turns the flow negative and
grows ``reverse_volume`` (rule E2); a closed valve stops the flow; the battery slowly runs down.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simulators.models import DailyProfile, Fault, SimulatedDevice
from vigil.clock import Clock
from vigil.profiles import Profile, builtin_profile

BATTERY_FULL_V = 3.6
BATTERY_DROP_V_PER_YEAR = 0.1


class WaterMeter(SimulatedDevice):
    """A simulated water meter (battery powered: it has no power-loss fault)."""

    supported_faults = frozenset({Fault.COMM_LOSS, Fault.COUNTER_RESET, Fault.REVERSE_FLOW})

    def __init__(
        self,
        *,
        device_id: str,
        clock: Clock,
        profile: Profile | None = None,
        seed: int = 0,
        mean_flow_m3h: float = 0.5,
        forward_m3: float = 0.0,
        utc_offset_h: float = 8.0,
    ) -> None:
        super().__init__(
            device_id=device_id,
            clock=clock,
            profile=profile or builtin_profile("water-meter"),
            seed=seed,
        )
        self.demand = DailyProfile(
            mean=mean_flow_m3h,
            a1=0.4 * mean_flow_m3h,
            p1_h=19.0,
            a2=0.3 * mean_flow_m3h,
            p2_h=7.0,
            utc_offset_h=utc_offset_h,
        )
        self.forward_m3 = forward_m3
        self.reverse_m3 = 0.0
        self.valve_open = True
        self.installed = self._t

    def set_valve(self, *, open_: bool) -> None:
        """Open or close the shut-off valve."""
        self.sync()
        self.valve_open = open_

    def flow_m3h(self) -> float:
        """Instantaneous flow; negative while flowing backwards."""
        if not self.valve_open:
            return 0.0
        flow = self.demand.at(self._t)
        return -flow if Fault.REVERSE_FLOW in self.faults else flow

    def _integrate(self, *, until: datetime) -> None:
        if not self.valve_open:
            return
        volume = self.demand.integral_h(self._t, until)
        if Fault.REVERSE_FLOW in self.faults:
            self.reverse_m3 += volume
        else:
            self.forward_m3 += volume

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.COUNTER_RESET:
            self.forward_m3 = self.reverse_m3 = 0.0

    def _values(self) -> dict[str, float]:
        years = (self._t - self.installed).total_seconds() / (365 * 86_400)
        return {
            "forward_volume": self.forward_m3,
            "reverse_volume": self.reverse_m3,
            "flow_rate": self.flow_m3h(),
            "battery": max(0.0, BATTERY_FULL_V - BATTERY_DROP_V_PER_YEAR * years),
            "valve_open": 1.0 if self.valve_open else 0.0,
        }
