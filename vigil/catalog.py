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


# -- names people read, in both languages of the console (zh-CN first: its users) -------------
# A code is never shown bare: the console and reports take these names (GET /api/v1/catalog).
Names = dict[str, str]  # language -> name

CODE_NAMES: dict[str, dict[int, Names]] = {
    "service_mode": {
        ServiceMode.OUT_OF_SERVICE: {"zh-CN": "停止服务", "en": "out of service"},
        ServiceMode.NORMAL: {"zh-CN": "正常运行", "en": "normal"},
        ServiceMode.INSPECTION: {"zh-CN": "检修", "en": "inspection"},
        ServiceMode.FIRE_RETURN: {"zh-CN": "消防返回", "en": "fire return"},
        ServiceMode.FIREFIGHTER: {"zh-CN": "消防员操作", "en": "firefighter service"},
        ServiceMode.EMERGENCY_POWER: {"zh-CN": "应急电源运行", "en": "emergency power"},
        ServiceMode.EARTHQUAKE: {"zh-CN": "地震运行", "en": "earthquake operation"},
        ServiceMode.UNKNOWN: {"zh-CN": "未知", "en": "unknown"},
    },
    "fault_code": {
        FaultCode.NONE: {"zh-CN": "无故障", "en": "no fault"},
        FaultCode.SAFETY_CIRCUIT_BROKEN: {"zh-CN": "安全回路断路", "en": "safety circuit broken"},
        FaultCode.DOOR_CLOSE_FAULT: {"zh-CN": "关门故障", "en": "door fails to close"},
        FaultCode.DOOR_OPEN_FAULT: {"zh-CN": "开门故障", "en": "door fails to open"},
        FaultCode.STOPPED_OUTSIDE_UNLOCKING_ZONE: {
            "zh-CN": "轿厢在开锁区域外停止",
            "en": "stopped outside the unlocking zone",
        },
        FaultCode.UNINTENDED_CAR_MOVEMENT: {
            "zh-CN": "轿厢意外移动",
            "en": "unintended car movement",
        },
        FaultCode.MOTOR_RUNTIME_LIMITER: {
            "zh-CN": "电动机运转时间限制器动作",
            "en": "motor run-time limiter tripped",
        },
        FaultCode.FLOOR_POSITION_LOST: {"zh-CN": "楼层位置丢失", "en": "floor position lost"},
        FaultCode.FAULT_PREVENTING_RESTART: {
            "zh-CN": "防止电梯再运行的故障",
            "en": "fault preventing a restart",
        },
        FaultCode.OVER_TRAVEL_TOP: {"zh-CN": "冲顶", "en": "over-travel at the top"},
        FaultCode.OVER_TRAVEL_BOTTOM: {"zh-CN": "蹲底", "en": "over-travel at the bottom"},
        FaultCode.TRAPPED_PASSENGER: {"zh-CN": "困人", "en": "passengers trapped"},
        FaultCode.MAIN_POWER_OFF: {"zh-CN": "主电源断电", "en": "main power off"},
        FaultCode.OUT_OF_SERVICE: {"zh-CN": "停止服务", "en": "out of service"},
        FaultCode.INSPECTION: {"zh-CN": "检修", "en": "inspection"},
        FaultCode.ALARM_BUTTON: {"zh-CN": "报警按钮", "en": "alarm button pressed"},
    },
    "door_state": {
        DoorState.CLOSED: {"zh-CN": "关闭", "en": "closed"},
        DoorState.OPENING: {"zh-CN": "正在开门", "en": "opening"},
        DoorState.OPEN: {"zh-CN": "打开", "en": "open"},
        DoorState.CLOSING: {"zh-CN": "正在关门", "en": "closing"},
    },
    "car_status": {
        CarStatus.STOPPED: {"zh-CN": "停止", "en": "stopped"},
        CarStatus.RUNNING: {"zh-CN": "运行", "en": "running"},
    },
    "direction": {
        Direction.NONE: {"zh-CN": "无方向", "en": "none"},
        Direction.UP: {"zh-CN": "上行", "en": "up"},
        Direction.DOWN: {"zh-CN": "下行", "en": "down"},
    },
    "lockout_state": {
        LockoutState.NONE: {"zh-CN": "无", "en": "none"},
        LockoutState.PENDING: {"zh-CN": "停梯待执行", "en": "lockout pending"},
        LockoutState.APPLIED: {"zh-CN": "已停梯", "en": "locked out"},
    },
    # TALQ actualLightState of a pole's lamp relay
    "lamp_on": {0: {"zh-CN": "灭", "en": "off"}, 1: {"zh-CN": "亮", "en": "on"}},
    "door_zone": {
        0: {"zh-CN": "平层区外", "en": "outside door zone"},
        1: {"zh-CN": "平层区内", "en": "in door zone"},
    },
    "passengers": {0: {"zh-CN": "无人", "en": "empty"}, 1: {"zh-CN": "有人", "en": "occupied"}},
    "alarm_button": {
        0: {"zh-CN": "未按下", "en": "not pressed"},
        1: {"zh-CN": "按下", "en": "pressed"},
    },
    "car_top_inspection": {0: {"zh-CN": "关", "en": "off"}, 1: {"zh-CN": "开", "en": "on"}},
    "pit_inspection": {0: {"zh-CN": "关", "en": "off"}, 1: {"zh-CN": "开", "en": "on"}},
}

KIND_NAMES: dict[str, Names] = {
    DeviceKind.ELEVATOR: {"zh-CN": "电梯", "en": "elevator"},
    DeviceKind.ENERGY_METER: {"zh-CN": "电能表", "en": "energy meter"},
    DeviceKind.WATER_METER: {"zh-CN": "水表", "en": "water meter"},
    DeviceKind.LIGHT_POLE: {"zh-CN": "路灯", "en": "street light"},
    DeviceKind.HIGH_MAST: {"zh-CN": "高杆灯", "en": "high mast"},
}

METRIC_NAMES: dict[str, Names] = {
    "service_mode": {"zh-CN": "运行模式", "en": "service mode"},
    "car_status": {"zh-CN": "轿厢状态", "en": "car"},
    "direction": {"zh-CN": "运行方向", "en": "direction"},
    "door_zone": {"zh-CN": "平层", "en": "door zone"},
    "floor": {"zh-CN": "楼层", "en": "floor"},
    "door_state": {"zh-CN": "门状态", "en": "door"},
    "passengers": {"zh-CN": "乘客", "en": "passengers"},
    "alarm_button": {"zh-CN": "报警按钮", "en": "alarm button"},
    "fault_code": {"zh-CN": "故障", "en": "fault"},
    "car_top_inspection": {"zh-CN": "轿顶检修", "en": "car-top inspection"},
    "pit_inspection": {"zh-CN": "底坑检修", "en": "pit inspection"},
    "lockout_state": {"zh-CN": "停梯", "en": "lockout"},
    "trip_count": {"zh-CN": "运行次数", "en": "trips"},
    "running_hours": {"zh-CN": "运行时间", "en": "running hours"},
    "alarm_selftest_at": {"zh-CN": "报警装置自检", "en": "alarm self-test"},
    "lamp_on": {"zh-CN": "灯", "en": "lamp"},
    "lamp_power": {"zh-CN": "灯功率", "en": "lamp power"},
    "lamp_current": {"zh-CN": "灯电流", "en": "lamp current"},
    "dim_level": {"zh-CN": "调光", "en": "dim level"},
    "supply_voltage": {"zh-CN": "供电电压", "en": "supply voltage"},
    "lux": {"zh-CN": "照度", "en": "illuminance"},
    "lamps_total": {"zh-CN": "灯数", "en": "lamps"},
    "lamps_out": {"zh-CN": "熄灭灯数", "en": "lamps out"},
    "power_total": {"zh-CN": "总功率", "en": "total power"},
    "voltage_l1": {"zh-CN": "L1 电压", "en": "voltage L1"},
    "current_l1": {"zh-CN": "L1 电流", "en": "current L1"},
    "frequency": {"zh-CN": "频率", "en": "frequency"},
    "import_energy": {"zh-CN": "正向有功电能", "en": "energy imported"},
    "export_energy": {"zh-CN": "反向有功电能", "en": "energy exported"},
    "flow_rate": {"zh-CN": "瞬时流量", "en": "flow rate"},
    "forward_volume": {"zh-CN": "正向累计流量", "en": "volume"},
    "battery": {"zh-CN": "电池", "en": "battery"},
}

# Metrics whose value is a Unix time (shown as a date and time, never as a number).
TIME_METRICS = frozenset({"alarm_selftest_at"})


def catalog_names() -> dict[str, object]:
    """Every name the console shows for a code, a kind or a metric, in both languages."""
    return {
        "codes": {
            metric: {str(int(code)): names for code, names in codes.items()}
            for metric, codes in CODE_NAMES.items()
        },
        "kinds": {str(kind): names for kind, names in KIND_NAMES.items()},
        "metrics": METRIC_NAMES,
        "time_metrics": sorted(TIME_METRICS),
    }
