"""Small helpers for rows, whatever row factory the connection uses."""

from __future__ import annotations

from typing import Any


def first_value(row: Any) -> Any:
    """The first column of a row (tuple or dict row); None for no row."""
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
