"""Telemetry rows and their PostgreSQL binary COPY encoding.

A row holds every metric a device reported at one instant (migration 0105): (device_ref,
set_id, ts, values, bad), where the set lists the metric names in sorted order and ``bad`` the
1-based positions of values the gateway flagged (NULL when all are good). Samples are grouped
into rows once per batch; a second sample of the same (device, metric, ts) in one batch is kept
apart (``Grouped.repeats``) and goes through the merge path, which records a conflict when
the values differ.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from operator import itemgetter

from vigil.wire import Sample

COLUMNS = '(device_ref, set_id, ts, "values", bad)'
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
# PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z.
PG_EPOCH_MS = 946_684_800_000
FLOAT8_OID = 701
INT2_OID = 21
_ROW_HEAD = struct.Struct(">hiiiiiq")  # 5 fields; device_ref, set_id, ts (each: length, value)
_NULL = struct.pack(">i", -1)

# (device, ts); each row maps metric -> sample
RowKey = tuple[str, int]


@dataclass(slots=True)
class Grouped:
    """The samples of a batch as rows, and the repeated points that did not fit in them."""

    rows: dict[RowKey, dict[str, Sample]] = field(default_factory=dict)
    repeats: list[tuple[str, list[Sample]]] = field(default_factory=list)
    points: int = 0

    def metric_lists(self) -> dict[RowKey, tuple[str, ...]]:
        """The sorted metric list of each row (its metric set), computed once per batch."""
        return {key: tuple(sorted(metrics)) for key, metrics in self.rows.items()}


_TS = itemgetter(1)  # Sample.ts


def group_samples(telemetry: Iterable[tuple[str, Sequence[Sample]]]) -> Grouped:
    """One row per (device, ts); a second sample of a (device, metric, ts) is a repeat."""
    grouped = Grouped()
    rows = grouped.rows
    repeats: dict[str, list[Sample]] = {}
    points = 0
    for device, samples in telemetry:
        # a device reports its metrics of one instant together: take them a run at a time
        for ts, run in groupby(samples, key=_TS):
            taken = list(run)
            values = {s.metric: s for s in taken}
            key = (device, ts)
            row = rows.get(key)
            if row is None and len(values) == len(taken):
                rows[key] = values
                points += len(taken)
                continue
            # the instant was seen before in this batch, or a metric repeats within the run
            if row is None:
                row = rows[key] = {}
            for sample in taken:
                if sample.metric in row:
                    repeats.setdefault(device, []).append(sample)
                else:
                    row[sample.metric] = sample
                    points += 1
    grouped.points = points
    grouped.repeats = list(repeats.items())
    return grouped


@lru_cache(maxsize=256)
def _array_struct(kind: str, count: int) -> struct.Struct:
    # one-dimensional array: length, ndim, has-nulls, element type, size, lower bound, elements
    element = "id" if kind == "d" else "ih"
    return struct.Struct(">iiiiii" + element * count)


def _float8_array(values: Sequence[float]) -> bytes:
    count = len(values)
    fields: list[float | int] = [20 + 12 * count, 1, 0, FLOAT8_OID, count, 1]
    for value in values:
        fields.append(8)
        fields.append(value)
    return _array_struct("d", count).pack(*fields)


def _int2_array(values: Sequence[int]) -> bytes:
    count = len(values)
    fields: list[int] = [20 + 6 * count, 1, 0, INT2_OID, count, 1]
    for value in values:
        fields.append(2)
        fields.append(value)
    return _array_struct("h", count).pack(*fields)


def encode_rows(
    rows: Mapping[RowKey, Mapping[str, Sample]],
    *,
    metric_lists: Mapping[RowKey, tuple[str, ...]],
    device_refs: Mapping[str, int],
    set_ids: Mapping[tuple[str, ...], int],
) -> bytes:
    """One complete COPY stream (header, rows, trailer) of telemetry rows."""
    parts = [HEADER]
    append = parts.append
    head = _ROW_HEAD.pack
    for key, points in rows.items():
        device, ts = key
        metrics = metric_lists[key]
        samples = [points[m] for m in metrics]
        append(head(5, 4, device_refs[device], 4, set_ids[metrics], 8, (ts - PG_EPOCH_MS) * 1000))
        append(_float8_array([s.value for s in samples]))
        bad = [i for i, s in enumerate(samples, start=1) if not s.good]
        append(_int2_array(bad) if bad else _NULL)
    append(TRAILER)
    return b"".join(parts)
