"""Decisions of the alerts package: retry backoff, webhook signatures, roster gaps."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from alerts.models import RetryPolicy, RosterGap

SIGNATURE_HEADER = "X-Vigil-Signature"
TIMESTAMP_HEADER = "X-Vigil-Timestamp"
DELIVERY_HEADER = "X-Vigil-Delivery"


def retry_at(*, policy: RetryPolicy, attempts: int, now: datetime) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None once attempts are used up."""
    if attempts >= policy.max_attempts:
        return None
    delay = min(policy.cap_s, policy.base_s * policy.factor ** max(0, attempts - 1))
    return now + timedelta(seconds=delay)


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes a webhook posts (and signs): compact JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``timestamp.body``: binding the time stops replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(*, secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is ours for this timestamp and body (what a receiver checks)."""
    return hmac.compare_digest(sign(secret=secret, timestamp=timestamp, body=body), signature)


def roster_gaps_in(
    *,
    firm_id: int,
    start: datetime,
    end: datetime,
    shifts: Sequence[tuple[datetime, datetime]],
) -> list[RosterGap]:
    """Parts of [start, end) that no shift covers (rule R3)."""
    gaps: list[RosterGap] = []
    covered_until = start
    for shift_start, shift_end in sorted(shifts):
        if shift_start > covered_until:
            gaps.append(RosterGap(firm_id, covered_until, min(shift_start, end)))
        covered_until = max(covered_until, shift_end)
        if covered_until >= end:
            break
    if covered_until < end:
        gaps.append(RosterGap(firm_id, covered_until, end))
    return [gap for gap in gaps if gap.end > gap.start]


def email_subject(payload: dict[str, Any]) -> str:
    """One-line subject for an alert email."""
    severity = str(payload.get("severity", "")).upper()
    kind = payload.get("type") or payload.get("kind", "alert")
    source = f"{payload.get('source_type', '')} {payload.get('source_id', '')}".strip()
    head = f"[Vigil {severity}]" if severity else "[Vigil]"
    return f"{head} {kind} {source}: {payload.get('reason', '')}".strip()


def email_text(payload: dict[str, Any]) -> str:
    """Plain-text body of an alert email: the message, then every field."""
    lines = [str(payload.get("message", "")), ""]
    lines += [f"{key}: {payload[key]}" for key in sorted(payload) if key != "message"]
    return "\n".join(lines) + "\n"
