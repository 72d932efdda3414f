"""In-memory cache of registered devices and gateways, refreshed on a miss.

A device registered after ingest started is looked up the first time it publishes; an id that is
still unknown is not looked up again for ``recheck_s`` seconds, so a flood of messages from an
unregistered device costs one query per interval, not one per message. A device seen under
another gateway than the cached one is looked up again too (it may have been moved), and the
whole registry is re-read every ``reload_s`` seconds (decommissioned devices).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import psycopg

from ingest import service
from ingest.models import DeviceInfo

_MAX_CHECKED = 100_000


class DeviceRegistry:
    """Registered devices and gateways, as ingest last read them."""

    def __init__(self, *, recheck_s: float = 1.0, reload_s: float = 300.0) -> None:
        self.recheck_s = recheck_s
        # A full re-read now and then picks up changes to known devices (decommissioning).
        self.reload_s = reload_s
        self._loaded_at: float | None = None
        self.devices: dict[str, DeviceInfo] = {}
        self.gateways: set[str] = set()
        # id -> monotonic time of its last look-up on demand (cache pacing, not domain time)
        self._checked_devices: dict[str, float] = {}
        self._checked_gateways: dict[str, float] = {}
        self.lookups = 0

    def load(self, conn: psycopg.Connection) -> None:
        """Read the whole registry."""
        self.devices = {d.device_id: d for d in service.load_devices(conn)}
        self.gateways = service.load_gateways(conn)
        self._loaded_at = time.monotonic()
        self._checked_devices.clear()
        self._checked_gateways.clear()

    def refresh(
        self,
        conn: psycopg.Connection,
        *,
        devices: Iterable[tuple[str, str]],
        gateways: Iterable[str],
    ) -> None:
        """Look up the (device, gateway) pairs and gateways the cache cannot vouch for."""
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at >= self.reload_s:
            self.load(conn)
        if len(self._checked_devices) > _MAX_CHECKED:
            self._checked_devices.clear()  # bound memory against floods of made-up ids
        if len(self._checked_gateways) > _MAX_CHECKED:
            self._checked_gateways.clear()
        want_devices = {
            device
            for device, gateway in devices
            if not self._vouches(device, gateway) and self._due(self._checked_devices, device, now)
        }
        want_gateways = {
            g
            for g in gateways
            if g not in self.gateways and self._due(self._checked_gateways, g, now)
        }
        if want_devices:
            self.lookups += 1
            found = {d.device_id: d for d in service.load_devices(conn, ids=sorted(want_devices))}
            for device in want_devices:
                self._checked_devices[device] = now
                if device in found:
                    self.devices[device] = found[device]
                else:
                    self.devices.pop(device, None)
        if want_gateways:
            self.lookups += 1
            self.gateways |= service.load_gateways(conn, ids=sorted(want_gateways))
            for gateway in want_gateways:
                self._checked_gateways[gateway] = now

    def _vouches(self, device: str, gateway: str) -> bool:
        known = self.devices.get(device)
        return known is not None and known.gateway_id == gateway

    def _due(self, checked: dict[str, float], key: str, now: float) -> bool:
        seen = checked.get(key)
        if seen is None or now - seen >= self.recheck_s:
            return True
        return False
