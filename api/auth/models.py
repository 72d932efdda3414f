"""Who is calling: roles, the authenticated principal, and the auth API's request/response types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vigil.clock import Instant


class Role(StrEnum):
    """Roles of the ``roles`` table; each carries exactly one scope (rule A2)."""

    ADMIN = "admin"
    REGULATOR = "regulator"
    FIRM_MANAGER = "firm_manager"
    DISPATCHER = "dispatcher"
    TECHNICIAN = "technician"
    SAFETY_MANAGER = "safety_manager"
    MANUFACTURER = "manufacturer"


FIRM_ROLES = frozenset({Role.FIRM_MANAGER, Role.DISPATCHER, Role.TECHNICIAN})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller and the scope its role carries."""

    user_id: int
    username: str
    display_name: str
    role: Role
    firm_id: int | None = None
    technician_id: int | None = None
    user_unit_id: int | None = None
    manufacturer_id: int | None = None
    jurisdiction_id: int | None = None
    via: Literal["session", "api_key"] = "session"
    credential_id: int | None = None  # the session's or the API key's row id
    expires_at: datetime | None = None  # when the session or key ends (None: a key without end)
    key_read_only: bool = False  # an API key that may only read (every regulator's)

    @property
    def read_only(self) -> bool:
        """Regulators read their jurisdiction and never write (rule A2)."""
        return self.role is Role.REGULATOR


class Strict(BaseModel):
    """Request bodies: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


Username = Field(pattern=r"^[a-z0-9][a-z0-9_.@-]{1,63}$", description="lower-case login name")


class LoginRequest(Strict):
    """Credentials for ``POST /auth/login``."""

    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    """A new session: send ``Authorization: Bearer <token>``."""

    token: str
    expires_at: datetime
    user: UserOut


class UserOut(BaseModel):
    """A user and its scope."""

    id: int
    username: str
    display_name: str
    role: Role
    firm_id: int | None
    technician_id: int | None
    user_unit_id: int | None
    manufacturer_id: int | None
    jurisdiction_id: int | None
    active: bool


class UserCreate(Strict):
    """A new user; the scope fields must match the role (rule A2)."""

    username: str = Username
    display_name: str = Field(default="", max_length=200)
    password: str = Field(min_length=8, max_length=1024)
    role: Role
    firm_id: int | None = Field(default=None, ge=1, le=2**62)
    technician_id: int | None = Field(default=None, ge=1, le=2**62)
    user_unit_id: int | None = Field(default=None, ge=1, le=2**62)
    manufacturer_id: int | None = Field(default=None, ge=1, le=2**62)
    jurisdiction_id: int | None = Field(default=None, ge=1, le=2**62)


class ApiKeyCreate(Strict):
    """A new API key for the calling user."""

    name: str = Field(min_length=1, max_length=200)
    expires_at: Instant | None = None
    read_only: bool = Field(
        default=False, description="may only read (GET); a regulator's keys always are"
    )


class ApiKeyOut(BaseModel):
    """An API key's public part."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    read_only: bool


class ApiKeyCreated(ApiKeyOut):
    """A new API key; ``key`` is shown once and never again."""

    key: str


SessionOut.model_rebuild()
