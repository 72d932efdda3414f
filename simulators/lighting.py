"""Street-light poles and high masts: dusk to dawn by photocell or schedule, dimming, hours.

The lamp relay closes at dusk and opens at dawn: by the photocell (the lux curve of a simple
solar day whose length follows the season) or by a fixed schedule. A lit lamp draws its rated
power times its dim level. Burning hours and switch-ons accumulate exactly over any clock jump.
A lamp failure leaves the relay closed with no power drawn (rule L1); on a high mast, lamps go
out one by one (rule L2).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta
from typing import Any

from simulators.models import Fault, SimulatedDevice
from vigil.clock import Clock
from vigil.profiles import Profile, builtin_profile
from vigil.wire import CommandAction

PEAK_LUX = 100_000.0
PHOTOCELL_ON_LUX = 30.0  # the relay closes below this


class StreetLight(SimulatedDevice):
    """A single-lamp pole controller."""

    supported_faults = SimulatedDevice.supported_faults | {Fault.LAMP_FAILURE, Fault.VOLTAGE_SAG}

    def __init__(
        self,
        *,
        device_id: str,
        clock: Clock,
        profile: Profile | None = None,
        seed: int = 0,
        rated_w: float = 150.0,
        photocell: bool = True,
        on_at: time = time(18, 30),
        off_at: time = time(6, 0),
        utc_offset_h: float = 8.0,
        nominal_voltage: float = 230.0,
        dim_level: int = 100,
    ) -> None:
        super().__init__(
            device_id=device_id,
            clock=clock,
            profile=profile or builtin_profile("street-light"),
            seed=seed,
        )
        self.rated_w = rated_w
        self.photocell = photocell
        self.on_at, self.off_at = on_at, off_at
        self.utc_offset = timedelta(hours=utc_offset_h)
        self.nominal_voltage = nominal_voltage
        self.dim_level = dim_level
        self.burning_s = 0.0
        self.switch_on_count = 0
        self.relay = self._relay_should_close()

    # -- the sky and the schedule --------------------------------------------------------------

    def _local(self, at: datetime) -> datetime:
        return (at + self.utc_offset).replace(tzinfo=None)

    def _day_hours(self, local_day: datetime) -> tuple[float, float]:
        """Local sunrise and sunset (hours) of a day: 12 h +/- 1.5 h over the year."""
        doy = local_day.timetuple().tm_yday
        half_day = 6.0 + 1.5 * math.cos(2 * math.pi * (doy - 172) / 365)
        return 12.0 - half_day, 12.0 + half_day

    def lux(self) -> float:
        """Photocell reading now."""
        local = self._local(self._t)
        sunrise, sunset = self._day_hours(local)
        hour = local.hour + local.minute / 60 + local.second / 3600
        if not sunrise <= hour <= sunset:
            return 0.0
        return PEAK_LUX * math.sin(math.pi * (hour - sunrise) / (sunset - sunrise))

    def _dawn_dusk(self, local_day: datetime) -> tuple[float, float]:
        """Local hours at which the relay opens (dawn) and closes (dusk) on a day."""
        if not self.photocell:
            return _hours(self.off_at), _hours(self.on_at)
        sunrise, sunset = self._day_hours(local_day)
        lag = math.asin(PHOTOCELL_ON_LUX / PEAK_LUX) / math.pi * (sunset - sunrise)
        return sunrise + lag, sunset - lag

    def _switches(self, around: datetime) -> list[tuple[datetime, bool]]:
        """Dawn (False) and dusk (True) moments from the day before to the day after."""
        local = self._local(around)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        moments = []
        for days in (-1, 0, 1, 2):
            day = midnight + timedelta(days=days)
            dawn, dusk = self._dawn_dusk(day)
            for hours, closes in ((dawn, False), (dusk, True)):
                local_moment = day + timedelta(hours=hours) - self.utc_offset
                moments.append((local_moment.replace(tzinfo=UTC), closes))
        return sorted(moments)

    def _scheduled_on(self, at: datetime) -> bool:
        # The last switch at or before ``at`` decides: the same moments the events fire at.
        return [closes for moment, closes in self._switches(at) if moment <= at][-1]

    def _next_switch(self, after: datetime) -> datetime:
        return next(moment for moment, _ in self._switches(after) if moment > after)

    # -- state ---------------------------------------------------------------------------------

    def _relay_should_close(self) -> bool:
        return self.powered and self.dim_level > 0 and self._scheduled_on(self._t)

    def _lamps_lit(self) -> int:
        return 1 if self.relay and Fault.LAMP_FAILURE not in self.faults else 0

    def _update_relay(self) -> None:
        closing = self._relay_should_close()
        if closing and not self.relay:
            self.switch_on_count += 1
        self.relay = closing

    def _next_event(self) -> datetime | None:
        return self._next_switch(self._t)

    def _fire(self, *, at: datetime) -> None:
        self._update_relay()

    def _integrate(self, *, until: datetime) -> None:
        if self._lamps_lit():
            self.burning_s += (until - self._t).total_seconds()

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.COUNTER_RESET:
            self.burning_s, self.switch_on_count = 0.0, 0
        self._update_relay()

    def _fault_cleared(self, fault: Fault) -> None:
        self._update_relay()

    def _apply_command(self, action: CommandAction, *, value: float) -> None:
        if action is not CommandAction.DIM:
            super()._apply_command(action, value=value)
        self.dim_level = round(value)
        self._update_relay()

    def supply_voltage(self) -> float:
        """Supply voltage now (0 in a power loss, lowered by a voltage sag)."""
        if not self.powered:
            return 0.0
        sag = self.faults.get(Fault.VOLTAGE_SAG)
        return self.nominal_voltage * (sag.get("factor", 0.8) if sag is not None else 1.0)

    def lamp_power_w(self) -> float:
        """Power drawn by the lamp(s) now."""
        return self._lamps_lit() * self.rated_w * self.dim_level / 100

    def _values(self) -> dict[str, float]:
        volts, watts = self.supply_voltage(), self.lamp_power_w()
        return {
            "lamp_on": 1.0 if self.relay else 0.0,
            "dim_level": float(self.dim_level),
            "lamp_power": watts,
            "lamp_current": watts / volts if volts else 0.0,
            "supply_voltage": volts,
            "burning_hours": round(self.burning_s / 3600, 1),
            "switch_on_count": float(self.switch_on_count),
            "lux": self.lux(),
        }


class HighMast(StreetLight):
    """A high mast: one relay, N lamps, each with its own state (rule L2)."""

    supported_faults = StreetLight.supported_faults | {Fault.MAST_LAMPS_OUT}

    def __init__(
        self,
        *,
        device_id: str,
        clock: Clock,
        profile: Profile | None = None,
        seed: int = 0,
        lamp_w: float = 400.0,
        **options: Any,
    ) -> None:
        profile = profile or builtin_profile("high-mast-8")
        self.lamps = sum(
            1
            for m in profile.metrics
            if m.startswith("lamp_") and m[5].isdigit() and m.endswith("_on")
        )
        self.out: set[int] = set()
        super().__init__(
            device_id=device_id, clock=clock, profile=profile, seed=seed, rated_w=lamp_w, **options
        )

    def _fault_started(self, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.MAST_LAMPS_OUT:
            chosen = params.get("lamps") or list(range(1, int(params.get("count", 1)) + 1))
            if not all(1 <= n <= self.lamps for n in chosen):
                raise ValueError(f"lamps are numbered 1..{self.lamps}")
            self.out = set(chosen)
        super()._fault_started(fault, params)

    def _fault_cleared(self, fault: Fault) -> None:
        if fault is Fault.MAST_LAMPS_OUT:
            self.out = set()  # relamped
        super()._fault_cleared(fault)

    def lamp_lit(self, n: int) -> bool:
        """True when lamp ``n`` (from 1) burns."""
        return bool(self.relay) and n not in self.out and Fault.LAMP_FAILURE not in self.faults

    def _lamps_lit(self) -> int:
        return sum(1 for n in range(1, self.lamps + 1) if self.lamp_lit(n))

    def _values(self) -> dict[str, float]:
        values = super()._values()
        per_lamp = self.rated_w * self.dim_level / 100
        for n in range(1, self.lamps + 1):
            values[f"lamp_{n}_on"] = 1.0 if self.lamp_lit(n) else 0.0
            values[f"lamp_{n}_power"] = per_lamp if self.lamp_lit(n) else 0.0
        values["lamps_total"] = float(self.lamps)
        values["lamps_out"] = float(self.lamps - self._lamps_lit()) if self.relay else 0.0
        return values


def _hours(moment: time) -> float:
    return moment.hour + moment.minute / 60 + moment.second / 3600
