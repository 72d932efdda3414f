"""Types of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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
