"""Decisions about assets: which colour an asset gets on the fleet grid."""

from __future__ import annotations

from collections.abc import Mapping

from api.assets.models import Condition
from vigil.catalog import DeviceKind, FaultCode, LockoutState, ServiceMode

_NOT_FAULTS = {FaultCode.NONE, FaultCode.OUT_OF_SERVICE, FaultCode.INSPECTION}
_ALARM_FAULTS = {FaultCode.TRAPPED_PASSENGER, FaultCode.ALARM_BUTTON}


def condition(*, kind: str, state: Mapping[str, float]) -> Condition:
    """The grid colour of an asset from its latest metric values."""
    if not state:
        return Condition.UNKNOWN
    if kind == DeviceKind.ELEVATOR:
        return _elevator_condition(state)
    if kind in (DeviceKind.LIGHT_POLE, DeviceKind.HIGH_MAST):
        return Condition.FAULT if state.get("lamps_out", 0) > 0 else Condition.OK
    return Condition.OK


def _elevator_condition(state: Mapping[str, float]) -> Condition:
    fault = int(state.get("fault_code", 0))
    if state.get("alarm_button", 0) == 1 or fault in _ALARM_FAULTS:
        return Condition.ALARM
    if state.get("lockout_state", 0) == LockoutState.APPLIED:
        return Condition.LOCKED_OUT
    if fault not in _NOT_FAULTS:
        return Condition.FAULT
    mode = state.get("service_mode")
    if mode == ServiceMode.INSPECTION:
        return Condition.INSPECTION
    if mode is not None and mode != ServiceMode.NORMAL:
        return Condition.OUT_OF_SERVICE
    return Condition.OK
