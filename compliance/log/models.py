"""Types of the compliance log (rule A1); its canonical form is in ``compliance.log.canonical``
(documented in docs/compliance.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic.dataclasses
from pydantic import BaseModel, Field, field_validator

from compliance.log.canonical import (  # noqa: F401 - the log's canonical form, re-exported
    GENESIS_HASH,
    BodyError,
    canonical_body,
    canonical_json,
    checkpoint_message,
    entry_bytes,
    entry_hash,
    format_at,
    tree_head_message,
)


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
    """A signed statement of the log: version 2 is a signed tree head (the Merkle root over the
    first ``entry_count`` entries and the chain's head hash); version 1 signed the count and
    head hash alone."""

    id: int
    entry_count: int
    head_hash: str
    signed_at: datetime
    public_key: str
    signature: str
    version: int = 1
    root_hash: str | None = None
    frontier: list[str] | None = None  # roots of the perfect subtrees (hex), to extend from

    def message(self) -> bytes:
        """The bytes the signature covers."""
        if self.version == 2:
            assert self.root_hash is not None
            return tree_head_message(
                tree_size=self.entry_count,
                root_hash=self.root_hash,
                head_hash=self.head_hash,
                signed_at=self.signed_at,
            )
        return checkpoint_message(
            entry_count=self.entry_count, head_hash=self.head_hash, signed_at=self.signed_at
        )


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
    """A signed tree head (version 2: Merkle root and chain head over ``entry_count``
    entries), or a signed entry count and head hash (version 1)."""

    id: int
    entry_count: int
    head_hash: str
    signed_at: datetime
    public_key: str
    signature: str
    version: int = 1
    root_hash: str | None = None
    signature_valid: bool | None = Field(
        description="whether it verifies under the public key given; null when none was given"
    )
