"""One logging set-up for every process: text for a terminal, or one JSON object per line for a
log collector (``--log-format json``), with the ids in context (device, incident, work order).

Ids reach a line either as ``extra={"device": ...}`` on the call, or from ``log_context(...)``
around the work (a context variable: it follows asyncio tasks and stays out of other threads).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
# the ids a line may carry, in the order they are written
CONTEXT_KEYS = ("gateway", "device", "incident", "work_order", "alarm", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "vigil_log_context", default=None
)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Every line logged inside the block carries these ids (``device="lift-7"``)."""
    token = _context.set({**(_context.get() or {}), **ids})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids in
    context, and the exception (type and text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = dict(_context.get() or {})
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                ids[key] = value
        line.update({k: ids[k] for k in CONTEXT_KEYS if ids.get(k) is not None})
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(*, level: str | int = "INFO", format: LogFormat = "text") -> None:
    """Configure the root logger of this process (replacing what was there)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
