"""PostgreSQL binary COPY encoding of telemetry rows (device_id, metric, ts, value, good).

Rows are packed with ``struct`` directly from wire samples: no datetime objects per row, and the
(device, metric) prefix of a row is cached, so encoding costs well under a microsecond a row.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from vigil.wire import Sample

COLUMNS = "(device_id, metric, ts, value, good)"
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
# PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z.
PG_EPOCH_MS = 946_684_800_000
_TAIL = struct.Struct(">iqidi?")  # ts (len, µs), value (len, float8), good (len, bool)


class TelemetryEncoder:
    """Encodes telemetry rows for ``COPY ... FROM STDIN (FORMAT BINARY)``."""

    def __init__(self, *, max_devices: int = 100_000) -> None:
        # device -> metric -> the row's bytes up to the timestamp
        self._prefixes: dict[str, dict[str, bytes]] = {}
        self._max_devices = max_devices

    def _device_prefixes(self, device: str) -> dict[str, bytes]:
        found = self._prefixes.get(device)
        if found is None:
            if len(self._prefixes) >= self._max_devices:
                self._prefixes.clear()
            found = self._prefixes[device] = {}
        return found

    @staticmethod
    def _prefix(device: str, metric: str) -> bytes:
        d, m = device.encode(), metric.encode()
        return struct.pack(">hi", 5, len(d)) + d + struct.pack(">i", len(m)) + m

    def encode(self, rows: Iterable[tuple[str, Iterable[Sample]]]) -> bytes:
        """One complete COPY stream (header, rows, trailer) for samples grouped by device."""
        parts = [HEADER]
        append = parts.append
        pack = _TAIL.pack
        for device, samples in rows:
            prefixes = self._device_prefixes(device)
            for sample in samples:
                prefix = prefixes.get(sample.metric)
                if prefix is None:
                    prefix = prefixes[sample.metric] = self._prefix(device, sample.metric)
                append(prefix)
                append(pack(8, (sample.ts - PG_EPOCH_MS) * 1000, 8, sample.value, 1, sample.good))
        append(TRAILER)
        return b"".join(parts)
