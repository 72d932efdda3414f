"""Regulator audit: log query, export (JSONL, CSV), chain verification and checkpoints (A1)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth.models import Principal, Role
from api.deps import Conn, Context, SyncConn, require_roles
from api.scope import device_scope
from compliance.log import flows as log_flows
from compliance.log import service as log_service
from compliance.log.models import CheckpointOut, LogPage, VerificationOut
from vigil.clock import Instant

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, require_roles(Role.REGULATOR, Role.ADMIN)]
Kind = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.]{0,63}$", description="entry kind")]
DeviceFilter = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PublicKey = Annotated[
    str | None,
    Query(pattern=r"^[0-9a-f]{64}$", description="raw Ed25519 public key (hex) to check against"),
]

EXPORT_COLUMNS = (
    "seq",
    "at",
    "kind",
    "subject_type",
    "subject_id",
    "device_id",
    "actor",
    "body",
    "prev_hash",
    "hash",
)


def _scope(principal: Principal) -> dict[str, Any]:
    """An admin reads every entry; a regulator those about assets in its jurisdiction (A2)."""
    if principal.role is Role.ADMIN:
        return {"devices": None, "device_params": {}}
    scope = device_scope(principal)
    return {"devices": scope.condition, "device_params": scope.params}


class ExportFormat(StrEnum):
    """Export formats."""

    JSONL = "jsonl"
    CSV = "csv"


@router.get("/log", response_model=LogPage, summary="Query the compliance log")
async def query_log(
    principal: Auditor,
    conn: Conn,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    kind: Kind = None,
    subject_type: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = None,
    subject_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] = None,
    device_id: DeviceFilter = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> LogPage:
    """Entries in chain order with their hashes; a regulator reads those about assets in its
    jurisdiction (rule A2)."""
    items = await log_service.list_entries(
        conn,
        **_scope(principal),
        after_seq=after_seq,
        limit=limit,
        kind=kind,
        subject_type=subject_type,
        subject_id=subject_id,
        device_id=device_id,
        since=since,
        until=until,
    )
    return LogPage(items=items, next_after_seq=items[-1].seq if len(items) == limit else None)


async def _lines(
    ctx: Any, principal: Principal, fmt: ExportFormat, filters: dict[str, Any]
) -> AsyncIterator[str]:
    async with ctx.pool.connection() as conn:
        if fmt is ExportFormat.CSV:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            yield buffer.getvalue()
        async for row in log_service.stream_entries(conn, **_scope(principal), **filters):
            row["at"] = row["at"].isoformat()
            if fmt is ExportFormat.JSONL:
                # body as the exact canonical text the hash covers, parsed
                yield json.dumps({**row, "body": json.loads(row["body"])}, ensure_ascii=False)
                yield "\n"
            else:
                buffer.seek(0)
                buffer.truncate()
                writer.writerow([row[c] for c in EXPORT_COLUMNS])
                yield buffer.getvalue()


@router.get(
    "/export",
    summary="Export the compliance log as JSONL or CSV",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
            "description": "one entry per line, in chain order",
        }
    },
)
async def export_log(
    principal: Auditor,
    ctx: Context,
    format: ExportFormat = ExportFormat.JSONL,
    kind: Kind = None,
    device_id: DeviceFilter = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> StreamingResponse:
    """Streams every entry in the caller's scope; CSV keeps the body as its canonical JSON text,
    so each entry's hash can be recomputed from the file."""
    filters = {"kind": kind, "device_id": device_id, "since": since, "until": until}
    media = "application/x-ndjson" if format is ExportFormat.JSONL else "text/csv"
    stamp = ctx.clock.now().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _lines(ctx, principal, format, filters),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="compliance-log-{stamp}.{format.value}"'
        },
    )


@router.get("/verify", response_model=VerificationOut, summary="Verify the whole chain")
def verify_log(_: Auditor, conn: SyncConn, public_key: PublicKey = None) -> VerificationOut:
    """Walks the whole log (every jurisdiction: the chain is one) and every checkpoint; with
    ``public_key``, also checks each checkpoint's signature. Reveals counts and hashes only."""
    result = log_flows.verify(conn, public_key=public_key)
    return VerificationOut(
        ok=result.ok,
        entries=result.entries,
        head_hash=result.head_hash,
        checkpoints=result.checkpoints,
        first_bad_entry=result.problem.seq if result.problem else None,
        problem=str(result.problem) if result.problem else None,
        checkpoint_problems=list(result.checkpoint_problems),
        signatures_checked=public_key is not None,
    )


@router.get(
    "/checkpoints", response_model=list[CheckpointOut], summary="Signed checkpoints of the log"
)
def list_checkpoints(
    _: Auditor,
    conn: SyncConn,
    public_key: PublicKey = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[CheckpointOut]:
    """The latest checkpoints, newest first; with ``public_key``, whether each verifies."""
    marks = log_service.checkpoints(conn)[::-1][:limit]
    return [
        CheckpointOut(
            id=m.id,
            entry_count=m.entry_count,
            head_hash=m.head_hash,
            signed_at=m.signed_at,
            public_key=m.public_key,
            signature=m.signature,
            version=m.version,
            root_hash=m.root_hash,
            signature_valid=(
                None if public_key is None else log_flows.signature_valid(m, public_key=public_key)
            ),
        )
        for m in marks
    ]
