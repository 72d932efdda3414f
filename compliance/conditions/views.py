"""The thresholds of the lighting and meter rules (L1-L5, E1-E4) as policy: read them, and set
them for a jurisdiction, a device or as the defaults (device over jurisdiction over default)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth.models import Principal, Role
from api.deps import Conn, Context, CurrentPrincipal, not_found, require_roles, run_sync
from api.scope import device_scope_args, device_visible
from compliance.conditions import flows, service

router = APIRouter(prefix="/condition-policies", tags=["condition policies"])

DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
JurisdictionId = Annotated[int, Path(ge=1, le=2**62)]
Admin = Annotated[Principal, require_roles(Role.ADMIN)]
# a regulator sets its jurisdiction's; a firm manager the rated power and such of its devices
JurisdictionSetter = Annotated[Principal, require_roles(Role.ADMIN, Role.REGULATOR)]
DeviceSetter = Annotated[Principal, require_roles(Role.ADMIN, Role.REGULATOR, Role.FIRM_MANAGER)]
REFUSED = {400: {"description": "an unknown threshold or a value out of its range"}}


class PolicyOut(BaseModel):
    """One policy row: the defaults (neither id), a jurisdiction's or a device's; a null value
    is inherited."""

    jurisdiction_id: int | None
    device_id: str | None
    values: dict[str, float | None]


class PolicyIn(BaseModel):
    """Thresholds to set (null: inherit from the jurisdiction or the defaults)."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, float | None] = Field(
        min_length=1,
        examples=[{"grounding_max_ohm": 10.0, "lamp_rated_w": 150.0}],
        description="names: " + ", ".join(service.ALL_POLICY_COLUMNS),
    )


class InForce(BaseModel):
    """The values in force for one device, and where each comes from."""

    device_id: str
    jurisdiction_id: int
    values: dict[str, float | None]
    source: dict[str, str]


def _out(row: dict[str, Any]) -> PolicyOut:
    return PolicyOut(
        jurisdiction_id=row["jurisdiction_id"],
        device_id=row["device_id"],
        values={c: row[c] for c in service.ALL_POLICY_COLUMNS},
    )


async def _change(ctx: Any, principal: Principal, body: PolicyIn, **owner: Any) -> PolicyOut:
    try:
        row = await run_sync(
            ctx,
            flows.change_policy,
            values=body.values,
            actor=principal.username,
            at=ctx.clock.now(),
            **owner,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    return _out(row)


@router.get("", response_model=list[PolicyOut], summary="Policies the caller's assets run on")
async def list_policies(principal: CurrentPrincipal, conn: Conn) -> list[PolicyOut]:
    """The defaults, and the rows of the jurisdictions and devices of the caller's scope."""
    rows = await service.list_policies(conn, **device_scope_args(principal))
    return [_out(row) for row in rows]


@router.get(
    "/devices/{device_id}/in-force",
    response_model=InForce,
    summary="The values in force for one device",
    responses={404: {"description": "no such device in the caller's scope"}},
)
async def in_force(device_id: DeviceId, principal: CurrentPrincipal, conn: Conn) -> InForce:
    """Each threshold in force and whether it is the device's, its jurisdiction's or the
    default."""
    if not await device_visible(conn, principal=principal, device_id=device_id):
        raise not_found("device")
    row = await service.policy_in_force(conn, device_id=device_id)
    return InForce(
        device_id=device_id,
        jurisdiction_id=row["jurisdiction_id"],
        values={c: row[c] for c in service.ALL_POLICY_COLUMNS},
        source={c: row[f"{c}__from"] for c in service.ALL_POLICY_COLUMNS},
    )


@router.put("/default", response_model=PolicyOut, summary="Change the defaults", responses=REFUSED)
async def set_default(body: PolicyIn, principal: Admin, ctx: Context) -> PolicyOut:
    """The defaults (RULES.md's values at first) need every value: none may be null."""
    return await _change(ctx, principal, body)


@router.put(
    "/jurisdictions/{jurisdiction_id}",
    response_model=PolicyOut,
    summary="Set a jurisdiction's thresholds",
    responses={**REFUSED, 404: {"description": "no such jurisdiction in the caller's scope"}},
)
async def set_jurisdiction(
    jurisdiction_id: JurisdictionId,
    body: PolicyIn,
    principal: JurisdictionSetter,
    ctx: Context,
    conn: Conn,
) -> PolicyOut:
    """An admin, or the jurisdiction's own regulator."""
    if principal.role is Role.REGULATOR and principal.jurisdiction_id != jurisdiction_id:
        raise not_found("jurisdiction")
    cur = await conn.execute("SELECT 1 FROM jurisdictions WHERE id = %s", (jurisdiction_id,))
    if await cur.fetchone() is None:
        raise not_found("jurisdiction")
    return await _change(ctx, principal, body, jurisdiction_id=jurisdiction_id)


@router.put(
    "/devices/{device_id}",
    response_model=PolicyOut,
    summary="Set a device's thresholds",
    responses={**REFUSED, 404: {"description": "no such device in the caller's scope"}},
)
async def set_device(
    device_id: DeviceId, body: PolicyIn, principal: DeviceSetter, ctx: Context, conn: Conn
) -> PolicyOut:
    """An admin, the regulator of its jurisdiction, or the manager of the firm in force."""
    if not await device_visible(conn, principal=principal, device_id=device_id):
        raise not_found("device")
    return await _change(ctx, principal, body, device_id=device_id)
