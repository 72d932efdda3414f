"""Tamper-evident compliance log (rule A1): hash-chained entries and signed checkpoints.

Callers record a compliance fact with ``append(conn, kind=..., subject_type=..., subject_id=...,
body={...}, actor=..., at=...)`` inside the transaction that writes the fact.
"""

from compliance.log.flows import create_checkpoint, load_or_create_key, verify
from compliance.log.models import Checkpoint, Entry, Problem, Verification
from compliance.log.service import append, entries, head

__all__ = [
    "Checkpoint",
    "Entry",
    "Problem",
    "Verification",
    "append",
    "create_checkpoint",
    "entries",
    "head",
    "load_or_create_key",
    "verify",
]
