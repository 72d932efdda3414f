"""Types of the compliance log (rule A1) and the canonical form each entry hash covers.

The canonical form is documented in docs/compliance.md: a JSON object with the keys ``actor``,
``at``, ``body``, ``kind``, ``prev``, ``seq``, ``subject_id`` and ``subject_type``, keys sorted at
every level, no whitespace, UTF-8, no NaN or infinity, ``at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
An entry's hash is the lowercase hex SHA-256 of those bytes; the first entry's ``prev`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import pydantic.dataclasses
from pydantic import BaseModel, Field, field_validator

GENESIS_HASH = "0" * 64


class BodyError(ValueError):
    """A log entry body that cannot be serialised canonically."""


def format_at(when: datetime) -> str:
    """Canonical text of an entry time: UTC, microseconds, trailing Z."""
    if when.tzinfo is None:
        raise BodyError("log entry times must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> Any:
    """JSON-ready copy of a body value; datetimes and dates become canonical text."""
    if isinstance(value, Enum):
        return _plain(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BodyError(f"non-finite number {value!r} in a log body")
        return value
    if isinstance(value, Decimal):
        return _plain(float(value)) if value != value.to_integral() else int(value)
    if isinstance(value, datetime):
        return format_at(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BodyError(f"log body keys must be text, got {key!r}")
            out[key] = _plain(item)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    raise BodyError(f"cannot put a {type(value).__name__} in a log body")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, no NaN: the one serialisation the log hashes."""
    return json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_body(body: dict[str, Any]) -> str:
    """Canonical JSON text of an entry body (an object)."""
    if not isinstance(body, dict):
        raise BodyError("a log body must be an object")
    return canonical_json(body)


def entry_bytes(
    *,
    seq: int,
    prev: str,
    kind: str,
    subject_type: str,
    subject_id: str,
    body_text: str,
    actor: str,
    at: datetime,
) -> bytes:
    """Canonical bytes of one entry (what its hash covers)."""
    head = {
        "actor": actor,
        "at": format_at(at),
        "kind": kind,
        "prev": prev,
        "seq": seq,
        "subject_id": subject_id,
        "subject_type": subject_type,
    }
    # The body is re-serialised so that a stored text which is not canonical cannot verify.
    return canonical_json({**head, "body": json.loads(body_text)}).encode("utf-8")


def entry_hash(data: bytes) -> str:
    """Lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


# class_row gives the database's text: pydantic makes the enums
@pydantic.dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One compliance log entry."""

    seq: int
    kind: str
    subject_type: str
    subject_id: str
    body: dict[str, Any]
    actor: str
    at: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Problem:
    """The first entry of the log that fails verification, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of verifying the whole log (and its checkpoints)."""

    entries: int
    head_hash: str
    checkpoints: int = 0
    problem: Problem | None = None
    checkpoint_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the chain and every checkpoint hold."""
        return self.problem is None and not self.checkpoint_problems


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of the log's entry count and head hash."""

    id: int
    entry_count: int
    head_hash: str
    signed_at: datetime
    public_key: str
    signature: str

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(
            entry_count=self.entry_count, head_hash=self.head_hash, signed_at=self.signed_at
        )


def checkpoint_message(*, entry_count: int, head_hash: str, signed_at: datetime) -> bytes:
    """Canonical bytes a checkpoint signature covers."""
    return canonical_json(
        {
            "entry_count": entry_count,
            "head_hash": head_hash,
            "signed_at": format_at(signed_at),
            "type": "vigil.compliance.checkpoint.v1",
        }
    ).encode("utf-8")


# -- what the audit API sends (compliance.log.views) ---------------------------------------


class LogEntry(BaseModel):
    """One compliance log entry, with the hashes that chain it (rule A1)."""

    seq: int
    kind: str
    subject_type: str
    subject_id: str
    device_id: str | None = Field(description="the asset the entry is about, when there is one")
    body: dict[str, Any]
    actor: str
    at: datetime
    prev_hash: str
    hash: str

    @field_validator("body", mode="before")
    @classmethod
    def _parsed(cls, value: Any) -> Any:
        # the log stores the body as the canonical JSON text its hash covers
        return json.loads(value) if isinstance(value, str) else value


class LogPage(BaseModel):
    """Entries after ``after_seq``; ask again with ``next_after_seq`` for more."""

    items: list[LogEntry]
    next_after_seq: int | None


class VerificationOut(BaseModel):
    """Outcome of verifying the whole chain and every checkpoint."""

    ok: bool
    entries: int
    head_hash: str
    checkpoints: int
    first_bad_entry: int | None
    problem: str | None
    checkpoint_problems: list[str]
    signatures_checked: bool


class CheckpointOut(BaseModel):
    """A signed statement of the log's entry count and head hash."""

    id: int
    entry_count: int
    head_hash: str
    signed_at: datetime
    public_key: str
    signature: str
    signature_valid: bool | None = Field(
        description="whether it verifies under the public key given; null when none was given"
    )
