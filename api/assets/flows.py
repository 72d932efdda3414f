"""Decisions about assets: which colour an asset gets on the fleet grid.

The decision is written as SQL so that the database builds the fleet grid's JSON in one pass
(hundreds of assets with a dozen values each); the codes come from ``vigil.catalog``.
"""

from __future__ import annotations

from api.assets.models import Condition
from vigil.catalog import DeviceKind, FaultCode, LockoutState, ServiceMode

_ALARM_FAULTS = (FaultCode.TRAPPED_PASSENGER, FaultCode.ALARM_BUTTON)
_NOT_FAULTS = (FaultCode.NONE, FaultCode.OUT_OF_SERVICE, FaultCode.INSPECTION)


def _codes(values: tuple[int, ...]) -> str:
    return ", ".join(str(int(v)) for v in values)


# Over a row with the latest ``service_mode``, ``fault_code``, ``alarm_button``,
# ``lockout_state`` and ``lamps_out`` of device ``d`` (NULL when never reported) and ``metrics``,
# the number of metrics it reported at all.
CONDITION_SQL = f"""
CASE
    WHEN coalesce(st.metrics, 0) = 0 THEN '{Condition.UNKNOWN.value}'
    WHEN d.kind = '{DeviceKind.ELEVATOR.value}' THEN CASE
        WHEN st.alarm_button = 1 OR st.fault_code IN ({_codes(_ALARM_FAULTS)})
            THEN '{Condition.ALARM.value}'
        WHEN st.lockout_state = {int(LockoutState.APPLIED)} THEN '{Condition.LOCKED_OUT.value}'
        WHEN coalesce(st.fault_code, 0) NOT IN ({_codes(_NOT_FAULTS)})
            THEN '{Condition.FAULT.value}'
        WHEN st.service_mode = {int(ServiceMode.INSPECTION)} THEN '{Condition.INSPECTION.value}'
        WHEN st.service_mode IS NOT NULL AND st.service_mode <> {int(ServiceMode.NORMAL)}
            THEN '{Condition.OUT_OF_SERVICE.value}'
        ELSE '{Condition.OK.value}' END
    WHEN d.kind IN ('{DeviceKind.LIGHT_POLE.value}', '{DeviceKind.HIGH_MAST.value}') THEN CASE
        WHEN coalesce(st.lamps_out, 0) > 0 THEN '{Condition.FAULT.value}'
        ELSE '{Condition.OK.value}' END
    ELSE '{Condition.OK.value}'
END"""

# The metrics CONDITION_SQL reads.
CONDITION_METRICS = ("service_mode", "fault_code", "alarm_button", "lockout_state", "lamps_out")
