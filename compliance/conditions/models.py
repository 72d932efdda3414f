"""Types and thresholds of the condition checks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Values in force for one device (``condition_policies``: device over jurisdiction over
    default); each alarm records them (every number of RULES.md is a default)."""

    # rule L1: a lamp that should be lit but draws less than this is failed
    lamp_failed_below_w: float = 1.0
    # rule L2: relamp a high mast when this share of its lamps is out
    relamp_share: float = 0.4
    # rule E2: supply voltage band around nominal
    nominal_voltage: float = 230.0
    voltage_band: float = 0.10
    # rule E4: a counter that falls from this share of its register's range to below the
    # complement has rolled over (declared by the register's maximum), not dropped
    rollover_share: float = 0.9
    # rule E1: a meter is read at least every reading_interval_s; silent for missed_readings
    # periods, its communication is lost
    reading_interval_s: float = 300.0
    missed_readings: int = 3
    # rule L5: lamp power within this share of rated x dim level (rated per device policy;
    # unknown: power not judged); supply voltage in the E2 band around nominal
    lamp_rated_w: float | None = None
    lamp_power_band: float = 0.2
    # rule E3: robust z-score of an hour's consumption over the meter's own history
    anomaly_z: float = 3.5
    anomaly_min_hours: int = 72
    anomaly_history_days: int = 28
    # rule L1: a pole on a schedule should be lit from lit_from_h to lit_until_h (local hours);
    # else while its photocell reads below dark_below_lux; without either, while its relay is on
    dark_below_lux: float = 10.0
    lit_from_h: float | None = None
    lit_until_h: float | None = None


@dataclass(frozen=True, slots=True)
class InspectionPolicy:
    """Rule L4's intervals and limits in force for a pole, a mast or a section, kept in the same
    policy rows as the thresholds (device over jurisdiction over default; a section has no
    device row); each round and finding records them."""

    patrols_per_week: int = 4  # a section without telemetry; one with it is reviewed daily
    pole_box_days: int = 7
    cleaning_days: int = 182  # cleaning and terminal tightening every 6 months
    grounding_days: int = 365
    insulation_days: int = 365
    calibration_days: int = 365  # timer and photocell
    grounding_max_ohm: float = 4.0
    insulation_min_mohm: float = 0.5
    insulation_test_v: float = 500.0  # the megger's test voltage (at least)


@dataclass(frozen=True, slots=True)
class Condition:
    """One kind of trouble a device can be in."""

    type: str
    rule: str
    severity: str
    message: str


LAMP_FAILURE = Condition("lamp_failure", "L1", "major", "lamp should be lit but draws no power")
MAST_RELAMPING = Condition(
    "mast_relamping", "L2", "major", "40% or more of the mast's lamps are out: relamping due"
)
VOLTAGE_OUT_OF_BAND = Condition(
    "voltage_out_of_band", "E2", "warning", "supply voltage outside the band around nominal"
)
REVERSE_ENERGY = Condition(
    "reverse_energy", "E2", "warning", "energy flowing backwards (possible tampering)"
)
REVERSE_FLOW = Condition(
    "reverse_flow", "E2", "warning", "water flowing backwards (possible tampering)"
)
LAMP_POWER_OUT_OF_BAND = Condition(
    "lamp_power_out_of_band", "L5", "warning", "lamp power too high or too low for its dim level"
)
SUPPLY_VOLTAGE_OUT_OF_BAND = Condition(
    "supply_voltage_out_of_band", "L5", "warning", "lamp supply voltage outside its band"
)
COMMUNICATION_LOSS = Condition(
    "communication_loss", "E1", "warning", "no reading for several reading periods"
)
CONSUMPTION_ANOMALY = Condition(
    "consumption_anomaly", "E3", "info", "an hour's consumption far outside the meter's own"
)
COUNTER_INTEGRITY = Condition(
    "counter_integrity", "E4", "warning", "a cumulative counter went backwards (data quality)"
)
CONDITIONS = (
    LAMP_FAILURE,
    MAST_RELAMPING,
    VOLTAGE_OUT_OF_BAND,
    REVERSE_ENERGY,
    REVERSE_FLOW,
    COMMUNICATION_LOSS,
    LAMP_POWER_OUT_OF_BAND,
    SUPPLY_VOLTAGE_OUT_OF_BAND,
    CONSUMPTION_ANOMALY,
)


@dataclass(frozen=True, slots=True)
class Finding:
    """Whether a condition holds for a device now, with the readings behind it."""

    device_id: str
    condition: Condition
    holds: bool
    readings: dict[str, float | None]


def thresholds_of(row: dict[str, Any]) -> Thresholds:
    """The thresholds in force that a reading row carries."""
    return Thresholds(**{f.name: row[f.name] for f in fields(Thresholds)})


def inspection_policy_of(row: dict[str, Any]) -> InspectionPolicy:
    """Rule L4's policy in force that a row carries."""
    return InspectionPolicy(**{f.name: row[f.name] for f in fields(InspectionPolicy)})
