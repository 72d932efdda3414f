"""Device kinds, their metrics and units, and the GB/T 24476 status vocabulary.

Every other package reads the vocabulary from here (RULES.md, Equipment).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class DeviceKind(StrEnum):
    """What a device is."""

    ELEVATOR = "elevator"
    ENERGY_METER = "energy_meter"
    WATER_METER = "water_meter"
    LIGHT_POLE = "light_pole"
    HIGH_MAST = "high_mast"


class ServiceMode(IntEnum):
    """GB/T 24476 service mode of a lift."""

    OUT_OF_SERVICE = 0
    NORMAL = 1
    INSPECTION = 2
    FIRE_RETURN = 3
    FIREFIGHTER = 4
    EMERGENCY_POWER = 5
    EARTHQUAKE = 6
    UNKNOWN = 7


class FaultCode(IntEnum):
    """GB/T 24476 / GB/T 38656 fault and event codes (0 means no fault)."""

    NONE = 0
    SAFETY_CIRCUIT_BROKEN = 1
    DOOR_CLOSE_FAULT = 2
    DOOR_OPEN_FAULT = 3
    STOPPED_OUTSIDE_UNLOCKING_ZONE = 4
    UNINTENDED_CAR_MOVEMENT = 5
    MOTOR_RUNTIME_LIMITER = 6
    FLOOR_POSITION_LOST = 7
    FAULT_PREVENTING_RESTART = 8
    OVER_TRAVEL_TOP = 9
    OVER_TRAVEL_BOTTOM = 10
    TRAPPED_PASSENGER = 11
    MAIN_POWER_OFF = 41
    OUT_OF_SERVICE = 42
    INSPECTION = 43
    ALARM_BUTTON = 90


class CarStatus(IntEnum):
    """Whether the car is moving."""

    STOPPED = 0
    RUNNING = 1


class Direction(IntEnum):
    """Travel direction of the car."""

    NONE = 0
    UP = 1
    DOWN = 2


class DoorState(IntEnum):
    """State of the car door."""

    CLOSED = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3


class LockoutState(IntEnum):
    """What the controller reports about an out-of-service (lockout) request."""

    NONE = 0
    PENDING = 1
    APPLIED = 2


class MetricType(StrEnum):
    """How a metric behaves over time."""

    GAUGE = "gauge"  # an instantaneous value
    COUNTER = "counter"  # cumulative, never decreases except a declared rollover (rule E4)
    STATE = "state"  # an enumerated or boolean status; transitions are events


@dataclass(frozen=True, slots=True)
class Metric:
    """One measurable quantity of a device kind."""

    name: str
    unit: str
    type: MetricType = MetricType.GAUGE
    description: str = ""


_G, _C, _S = MetricType.GAUGE, MetricType.COUNTER, MetricType.STATE

ELEVATOR_METRICS: tuple[Metric, ...] = (
    Metric("service_mode", "", _S, "GB/T 24476 service mode (ServiceMode)"),
    Metric("car_status", "", _S, "0 stopped, 1 running (CarStatus)"),
    Metric("direction", "", _S, "0 none, 1 up, 2 down (Direction)"),
    Metric("door_zone", "", _S, "1 when the car is inside a door (unlocking) zone"),
    Metric("floor", "", _S, "current or last passed floor"),
    Metric("door_state", "", _S, "0 closed, 1 opening, 2 open, 3 closing (DoorState)"),
    Metric("passengers", "", _S, "1 when passengers are detected in the car"),
    Metric("alarm_button", "", _S, "1 while the in-car alarm button is pressed"),
    Metric("fault_code", "", _S, "GB/T 24476 fault code (FaultCode), 0 none"),
    Metric("car_top_inspection", "", _S, "1 while the car-top inspection station is switched on"),
    Metric("pit_inspection", "", _S, "1 while the pit inspection station is switched on"),
    Metric("lockout_state", "", _S, "0 none, 1 pending, 2 applied (LockoutState)"),
    Metric("trip_count", "trips", _C, "trips since commissioning"),
    Metric("running_hours", "h", _C, "motor running hours"),
    Metric("alarm_selftest_at", "s", _G, "Unix time of the last in-car alarm self-test (rule M11)"),
)

ENERGY_METER_METRICS: tuple[Metric, ...] = (
    Metric("voltage_l1", "V"),
    Metric("voltage_l2", "V"),
    Metric("voltage_l3", "V"),
    Metric("current_l1", "A"),
    Metric("current_l2", "A"),
    Metric("current_l3", "A"),
    Metric("power_l1", "W"),
    Metric("power_l2", "W"),
    Metric("power_l3", "W"),
    Metric("power_total", "W"),
    Metric("power_factor", ""),
    Metric("frequency", "Hz"),
    Metric("import_energy", "kWh", _C),
    Metric("export_energy", "kWh", _C),
    Metric("total_energy", "kWh", _C),
)

WATER_METER_METRICS: tuple[Metric, ...] = (
    Metric("forward_volume", "m3", _C),
    Metric("reverse_volume", "m3", _C),
    Metric("flow_rate", "m3/h"),
    Metric("valve_open", "", _S),
    Metric("battery", "V"),
)

LIGHT_POLE_METRICS: tuple[Metric, ...] = (
    Metric("lamp_on", "", _S, "lamp relay closed"),
    Metric("dim_level", "%", _S, "commanded dim level, 0-100"),
    Metric("lamp_power", "W"),
    Metric("lamp_current", "A"),
    Metric("supply_voltage", "V"),
    Metric("burning_hours", "h", _C, "TALQ operatingHours"),
    Metric("switch_on_count", "", _C, "TALQ switchOnCounter"),
    Metric("lux", "lx", _G, "photocell reading"),
)

HIGH_MAST_METRICS: tuple[Metric, ...] = (
    *LIGHT_POLE_METRICS,
    Metric("lamps_total", "", _S, "number of lamps on the mast"),
    Metric("lamps_out", "", _S, "lamps that should be lit but draw no power (rule L2)"),
)

METRICS: dict[DeviceKind, dict[str, Metric]] = {
    DeviceKind.ELEVATOR: {m.name: m for m in ELEVATOR_METRICS},
    DeviceKind.ENERGY_METER: {m.name: m for m in ENERGY_METER_METRICS},
    DeviceKind.WATER_METER: {m.name: m for m in WATER_METER_METRICS},
    DeviceKind.LIGHT_POLE: {m.name: m for m in LIGHT_POLE_METRICS},
    DeviceKind.HIGH_MAST: {m.name: m for m in HIGH_MAST_METRICS},
}

# Transitions of these elevator metrics are published as events at once by the gateway.
ELEVATOR_EVENT_METRICS: frozenset[str] = frozenset(
    {
        "service_mode",
        "door_state",
        "door_zone",
        "car_status",
        "alarm_button",
        "fault_code",
        "passengers",
        "car_top_inspection",
        "pit_inspection",
        "lockout_state",
    }
)

# Per-lamp metrics of a high mast are named lamp_<n>_on / lamp_<n>_power (n from 1).
MAST_LAMP_METRIC_PREFIX = "lamp_"


def metric(kind: DeviceKind | str, name: str) -> Metric | None:
    """Look up a metric of a device kind, or None when the kind has no such metric."""
    known = METRICS.get(DeviceKind(kind))
    if known is None:
        return None
    found = known.get(name)
    if found is None and DeviceKind(kind) is DeviceKind.HIGH_MAST:
        return _mast_lamp_metric(name)
    return found


def _mast_lamp_metric(name: str) -> Metric | None:
    parts = name.split("_")
    if len(parts) == 3 and parts[0] == "lamp" and parts[1].isdigit():
        if parts[2] == "on":
            return Metric(name, "", _S, f"lamp {parts[1]} lit")
        if parts[2] == "power":
            return Metric(name, "W", _G, f"lamp {parts[1]} power")
    return None


def is_metric(kind: DeviceKind | str, name: str) -> bool:
    """True when ``name`` is a metric of ``kind``."""
    return metric(kind, name) is not None
