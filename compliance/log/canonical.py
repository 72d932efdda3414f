"""The canonical form of the compliance log (rule A1): what each entry hash, tree leaf and
signed head covers. Standard library only, so that a regulator's verifier needs nothing else.

An entry is a JSON object with the keys ``actor``, ``at``, ``body``, ``kind``, ``prev``,
``seq``, ``subject_id`` and ``subject_type``, keys sorted at every level, no whitespace, UTF-8,
no NaN or infinity, ``at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. An entry's hash is the lowercase
hex SHA-256 of those bytes; the first entry's ``prev`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

GENESIS_HASH = "0" * 64


class BodyError(ValueError):
    """A log entry body that cannot be serialised canonically."""


def format_at(when: datetime) -> str:
    """Canonical text of an entry time: UTC, microseconds, trailing Z."""
    if when.tzinfo is None:
        raise BodyError("log entry times must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# JSON's own types, returned as they are (exact types: a subclass such as an enum is converted)
_AS_IS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> Any:
    """JSON-ready copy of a body value; datetimes and dates become canonical text."""
    kind = type(value)
    if kind in _AS_IS:  # most of a body: checked first, by exact type (a large batch's cost)
        return value
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise BodyError(f"log body keys must be text, got {key!r}")
            out[key] = item if type(item) in _AS_IS else _plain(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) in _AS_IS else _plain(item) for item in value]
    return _plain_other(value)


def _plain_other(value: Any) -> Any:
    """``_plain`` for every other type."""
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, int | str):  # a subclass JSON writes as its base type
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
        return _plain(dict(value))
    if isinstance(value, list | tuple):
        return _plain(list(value))
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
    body_is_canonical: bool = False,
) -> bytes:
    """Canonical bytes of one entry (what its hash covers). ``body_is_canonical``: the body
    text was just made by ``canonical_body`` (an append), so it is spliced in as it is rather
    than parsed and written again (what a verification does with a stored text)."""
    head = {
        "actor": actor,
        "at": format_at(at),
        "kind": kind,
        "prev": prev,
        "seq": seq,
        "subject_id": subject_id,
        "subject_type": subject_type,
    }
    if body_is_canonical:
        # "body" sorts between "at" and "kind"; no text value can hold an unescaped quote, so
        # the first ',"kind":' is the key's
        text = canonical_json(head)
        cut = text.index(',"kind":')
        return f'{text[:cut]},"body":{body_text}{text[cut:]}'.encode()
    # The body is re-serialised so that a stored text which is not canonical cannot verify.
    return canonical_json({**head, "body": json.loads(body_text)}).encode("utf-8")


def entry_hash(data: bytes) -> str:
    """Lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


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


def tree_head_message(
    *, tree_size: int, root_hash: str, head_hash: str, signed_at: datetime
) -> bytes:
    """Canonical bytes a signed tree head covers: the Merkle root over the first ``tree_size``
    entries and the hash chain's head at that entry."""
    return canonical_json(
        {
            "head_hash": head_hash,
            "root_hash": root_hash,
            "signed_at": format_at(signed_at),
            "tree_size": tree_size,
            "type": "vigil.compliance.tree_head.v2",
        }
    ).encode("utf-8")


def manifest_message(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes an export manifest's signature covers (every field but the signature):
    which entries of which scope a bundle holds, so that none can be left out unseen."""
    fields = {k: v for k, v in manifest.items() if k != "signature"}
    return canonical_json({**fields, "type": "vigil.compliance.manifest.v1"}).encode("utf-8")


def parse_at(text: str) -> datetime:
    """An entry time from its canonical text."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def key_fingerprint(public_key_hex: str) -> str:
    """SHA-256 of a raw Ed25519 public key, hex: what a regulator compares out of band."""
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()
