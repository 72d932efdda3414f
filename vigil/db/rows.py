"""Small helpers for rows, whatever row factory the connection uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def first_value(row: Any) -> Any:
    """The first column of a row (tuple or dict row); None for no row."""
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def columns(model: type, *, table: str = "", casts: Mapping[str, str] | None = None) -> str:
    """The select list that fills a model's fields by name (a dataclass or a pydantic model),
    for psycopg's ``class_row`` (``table``: qualify each column; ``casts``: a type to cast a
    column to, by field)."""
    prefix = f"{table}." if table else ""
    casts = casts or {}
    fields = getattr(model, "model_fields", None)
    names = list(fields) if fields is not None else [f.name for f in dataclasses.fields(model)]
    return ", ".join(
        f"{prefix}{name}::{casts[name]} AS {name}" if name in casts else prefix + name
        for name in names
    )
