"""A three-phase energy meter (Eastron SDM630 register map) following a daily load profile.

Power follows a smooth daily curve (evening peak, morning shoulder); energy is its exact
integral, so the counters stay right over any jump of the clock. Faults: reverse energy (the
powers turn negative and export energy grows, rule E2), voltage sag (rule E2), counter reset
(rule E4), power loss (everything reads 0).
"""

from __future__ import annotations

from typing import Any

from simulators.models import DailyProfile, Fault, SimulatedDevice, jitter
from vigil.clock import Clock
from vigil.profiles import Profile, builtin_profile

PHASE_SHARES = (0.36, 0.33, 0.31)  # how the load splits over L1, L2, L3


class EnergyMeter(SimulatedDevice):
    """A simulated SDM630-style meter."""

    supported_faults = SimulatedDevice.supported_faults | {
        Fault.REVERSE_ENERGY,
        Fault.VOLTAGE_SAG,
    }

    def __init__(
        self,
        *,
        device_id: str,
        clock: Clock,
        profile: Profile | None = None,
        seed: int = 0,
        nominal_voltage: float = 230.0,
        frequency: float = 50.0,
        mean_power_w: float = 5_000.0,
        power_factor: float = 0.95,
        ripple: bool = True,
        import_kwh: float = 0.0,
        utc_offset_h: float = 8.0,
    ) -> None:
        super().__init__(
            device_id=device_id,
            clock=clock,
            profile=profile or builtin_profile("sdm630"),
            seed=seed,
        )
        self.nominal_voltage = nominal_voltage
        self.nominal_frequency = frequency
        self.power_factor = power_factor
        self.ripple = ripple
        self.load = DailyProfile(
            mean=mean_power_w,
            a1=0.45 * mean_power_w,
            p1_h=19.0,
            a2=0.2 * mean_power_w,
            p2_h=9.0,
            utc_offset_h=utc_offset_h,
        )
        self.import_kwh = import_kwh
        self.export_kwh = 0.0

    @property
    def reversed(self) -> bool:
        """True while energy flows back into the grid (reverse energy fault)."""
        return Fault.REVERSE_ENERGY in self.faults

    def _integrate(self, *, until: Any) -> None:
        if not self.powered:
            return
        kwh = self.load.integral_h(self._t, until) / 1000
        if self.reversed:
            self.export_kwh += kwh
        else:
            self.import_kwh += kwh

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.COUNTER_RESET:
            self.import_kwh = self.export_kwh = 0.0  # rule E4: a drop the platform must flag
        elif fault is Fault.VOLTAGE_SAG:
            factor = params.get("factor", 0.8)
            if not 0 <= factor <= 1:
                raise ValueError("voltage_sag factor must be between 0 and 1")

    def voltage(self) -> float:
        """Line-to-neutral voltage now (sagged during a voltage sag)."""
        if not self.powered:
            return 0.0
        volts = self.nominal_voltage
        if self.ripple:
            volts += 1.5 * jitter(seed=self.seed, key=f"{self.device_id}:v", at=self._t)
        sag = self.faults.get(Fault.VOLTAGE_SAG)
        if sag is not None:
            volts *= sag.get("factor", 0.8)
        return volts

    def power_w(self) -> float:
        """Total active power now; negative while exporting."""
        if not self.powered:
            return 0.0
        watts = self.load.at(self._t)
        if self.ripple:
            watts *= 1 + 0.02 * jitter(seed=self.seed, key=f"{self.device_id}:p", at=self._t)
        return -watts if self.reversed else watts

    def _values(self) -> dict[str, float]:
        volts, total = self.voltage(), self.power_w()
        powers = [total * share for share in PHASE_SHARES]
        pf = self.power_factor if self.powered else 0.0
        frequency = 0.0
        if self.powered:
            frequency = self.nominal_frequency
            if self.ripple:
                key = f"{self.device_id}:f"
                frequency += 0.02 * jitter(seed=self.seed, key=key, at=self._t)
        values: dict[str, float] = {
            "power_total": sum(powers),
            "power_factor": pf,
            "frequency": frequency,
            "import_energy": self.import_kwh,
            "export_energy": self.export_kwh,
            "total_energy": self.import_kwh + self.export_kwh,
        }
        for n, watts in enumerate(powers, start=1):
            values[f"voltage_l{n}"] = volts
            values[f"power_l{n}"] = watts
            values[f"current_l{n}"] = abs(watts) / (volts * pf) if volts and pf else 0.0
        return values
