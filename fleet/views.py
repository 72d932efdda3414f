"""``/api/v1/fleet/...``: create, update, retire, get and list every kind of registry record,
scoped by rule A2 (fleet.flows.WRITERS says who writes what).

Each kind gets the same five routes; the request body is the kind's record (fleet.models), whose
references are natural keys. A composite key is written as path segments:
``/fleet/contracts/lift-1/2026-01-05``, ``/fleet/components/lift-1/safety_gear``.

(No ``from __future__ import annotations``: the routes' body types are made per kind in a loop,
and FastAPI must see them as objects.)
"""

from datetime import date, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, create_model

from api.deps import Context, CurrentPrincipal, run_sync
from api.scope import device_scope
from fleet import flows
from fleet.models import KINDS, FleetError, FleetRecord, Kind, NotFound

router = APIRouter(prefix="/fleet", tags=["fleet"])


class RowMeta(BaseModel):
    """What the registry adds to every record it returns."""

    model_config = ConfigDict(extra="allow")

    row_id: int | None = None
    retired_at: datetime | None = None


def _access(principal: Any) -> flows.Access:
    scope = device_scope(principal)
    return flows.Access(viewer=principal, devices=scope.condition, params=scope.params)


def _problem_response(exc: FleetError) -> JSONResponse:
    detail = [
        {"loc": ["body", p.column] if p.column else ["body"], "msg": p.reason, "type": "fleet"}
        for p in exc.problems
    ]
    exists = any("already exists" in p.reason for p in exc.problems)
    code = status.HTTP_409_CONFLICT if exists else 422
    return JSONResponse({"detail": detail}, status_code=code)


async def _call(ctx: Any, fn: Any, **kwargs: Any) -> Any:
    """Run a flow; its refusals become 403, 404, 409 or 422 with the field named."""
    try:
        return await run_sync(ctx, fn, **kwargs)
    except flows.Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from None
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except FleetError as exc:
        return _problem_response(exc)
    except psycopg.errors.IntegrityError as exc:  # a constraint no check above foresaw
        raise HTTPException(status.HTTP_409_CONFLICT, detail=exc.diag.message_primary) from None


def _key(kind: Kind, path: str) -> tuple[Any, ...]:
    parts = path.split("/")
    if len(parts) != len(kind.key) or not all(parts):
        shape = "/".join("{" + f + "}" for f in kind.key)
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind.name} are named {shape}")
    if kind.name == "contracts":
        try:
            return (parts[0], date.fromisoformat(parts[1]))
        except ValueError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="starts_on is a date") from None
    return tuple(parts)


def _routes(kind: Kind) -> None:
    record_type: type[FleetRecord] = kind.record
    out_type = create_model(f"{record_type.__name__}Out", __base__=(RowMeta, record_type))
    out_type.model_config = ConfigDict(extra="allow")
    fields = ", ".join(kind.key)
    noun = kind.name.replace("_", " ")

    async def list_kind(
        principal: CurrentPrincipal,
        ctx: Context,
        include_retired: bool = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        return await _call(
            ctx,
            flows.read_records,
            kind=kind,
            access=_access(principal),
            include_retired=include_retired,
            limit=limit,
            offset=offset,
        )

    async def get_one(key: str, principal: CurrentPrincipal, ctx: Context) -> Any:
        return await _call(
            ctx, flows.read_record, kind=kind, key=_key(kind, key), access=_access(principal)
        )

    async def create(
        record: Annotated[record_type, Body()],  # type: ignore[valid-type]
        principal: CurrentPrincipal,
        ctx: Context,
    ) -> Any:
        result = await _call(
            ctx,
            flows.create_record,
            kind=kind,
            record=record,
            access=_access(principal),
            at=ctx.clock.now(),
        )
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(
            out_type.model_validate(result).model_dump(mode="json"), status.HTTP_201_CREATED
        )

    async def update(
        key: str,
        changes: Annotated[dict[str, Any], Body(description=f"fields of the {noun} to change")],
        principal: CurrentPrincipal,
        ctx: Context,
    ) -> Any:
        unknown = sorted(set(changes) - set(kind.fields))
        if unknown:
            return _problem_response(
                FleetError([flows.Problem("unknown field", column) for column in unknown])
            )
        return await _call(
            ctx,
            flows.update_record,
            kind=kind,
            key=_key(kind, key),
            changes=changes,
            access=_access(principal),
            at=ctx.clock.now(),
        )

    async def retire(key: str, principal: CurrentPrincipal, ctx: Context) -> Any:
        return await _call(
            ctx,
            flows.retire_record,
            kind=kind,
            key=_key(kind, key),
            access=_access(principal),
            at=ctx.clock.now(),
        )

    base = f"/{kind.name}"
    one = base + "/{key:path}"
    router.add_api_route(base, list_kind, methods=["GET"], response_model=list[out_type],
                         summary=f"List {noun} in scope")  # fmt: skip
    router.add_api_route(base, create, methods=["POST"], status_code=201, response_model=out_type,
                         summary=f"Create one of the {noun}")  # fmt: skip
    router.add_api_route(one + "/retire", retire, methods=["POST"],
                         summary=f"Retire one of the {noun} ({fields}); history stays")  # fmt: skip
    router.add_api_route(one, get_one, methods=["GET"], response_model=out_type,
                         summary=f"One of the {noun} by {fields}")  # fmt: skip
    router.add_api_route(one, update, methods=["PATCH"], response_model=out_type,
                         summary=f"Change fields of one of the {noun}")  # fmt: skip


for _kind in KINDS.values():
    _routes(_kind)
