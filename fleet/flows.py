"""The registry's decisions: who may write what, how import files are read and checked, the
gateway configuration a gateway's registered devices make, and the broker's password and ACL
files. No SQL here: fleet.service runs it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import secrets
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
import tomli_w
from psycopg import sql
from pydantic import ValidationError

from fleet import service
from fleet.models import (
    KINDS,
    Action,
    FleetError,
    FleetRecord,
    Kind,
    Problem,
    Viewer,
    WriteResult,
    problem_place,
)
from vigil.profiles import builtin_models, builtin_profile
from vigil.wire import PREFIX

# -- who may write what (rule A2) -----------------------------------------------------------

_ALL = frozenset(Action)
_WRITE = frozenset({Action.CREATE, Action.UPDATE, Action.RETIRE})
# role -> kind -> actions beyond reading; the rows each may touch are fleet.service.write_scope
WRITERS: dict[str, dict[str, frozenset[Action]]] = {
    "admin": {name: _ALL for name in KINDS},
    # a regulator manages its jurisdiction's policies (an admin creates jurisdictions)
    "regulator": {"jurisdictions": frozenset({Action.UPDATE})},
    # a firm manages its contracted assets and its technicians, and onboards a new customer
    "firm_manager": {
        **{
            name: _WRITE
            for name in (
                "user_units",
                "sites",
                "gateways",
                "devices",
                "components",
                "contracts",
                "technicians",
            )
        },
        "manufacturers": frozenset({Action.CREATE}),
    },
    # a user unit manages its sites' safety managers
    "safety_manager": {"safety_managers": _WRITE},
}


def may(role: str, action: Action, kind: str) -> bool:
    """True when ``role`` may ``action`` records of ``kind`` at all (rule A2)."""
    return action is Action.READ or action in WRITERS.get(role, {}).get(kind, frozenset())


# -- import files -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One CSV file of an import: its name (for messages), its kind and its text."""

    name: str
    kind: Kind
    text: str


def kind_of_file(name: str) -> Kind | None:
    """The kind a file holds, from its name: ``devices.csv``, ``03-devices.csv``."""
    stem = Path(name.rsplit(":", 1)[-1]).stem.lower()  # a ZIP member: archive.zip:member
    for kind in KINDS.values():
        if stem == kind.name or stem.endswith(("-" + kind.name, "_" + kind.name)):
            return kind
    return None


def read_sources(path: Path) -> list[Source]:
    """The CSV files of an import: one file, a folder of them, or a ZIP of them. A file whose
    name is no kind is an error naming it."""
    files: list[tuple[str, bytes]] = []
    if path.is_dir():
        files = [(str(p), p.read_bytes()) for p in sorted(path.glob("*.csv"))]
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            files = [
                (f"{path}:{info.filename}", archive.read(info))
                for info in sorted(archive.infolist(), key=lambda i: i.filename)
                if info.filename.lower().endswith(".csv") and not info.is_dir()
            ]
    elif path.exists():
        files = [(str(path), path.read_bytes())]
    else:
        raise FleetError([Problem("no such file or folder", source=str(path))])
    if not files:
        raise FleetError([Problem("no .csv files in it", source=str(path))])
    sources: list[Source] = []
    problems: list[Problem] = []
    for name, data in files:
        kind = kind_of_file(name)
        if kind is None:
            problems.append(
                Problem(f"the file name names no kind; one of {', '.join(KINDS)}", source=name)
            )
            continue
        try:
            text = data.decode("utf-8-sig")  # spreadsheets write a BOM
        except UnicodeDecodeError as exc:
            problems.append(Problem(f"not UTF-8 (byte {exc.start})", source=name))
            continue
        sources.append(Source(name, kind, text))
    if problems:
        raise FleetError(problems)
    order = list(KINDS)
    return sorted(sources, key=lambda s: order.index(s.kind.name))


@dataclass
class Parsed:
    """A file's valid records with their line numbers, and its problems."""

    source: Source
    records: list[FleetRecord] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def parse(source: Source) -> Parsed:
    """Validate every row of a file; each problem names the file, line and column."""
    parsed = Parsed(source)
    kind = source.kind
    reader = csv.DictReader(io.StringIO(source.text, newline=""))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in kind.fields]
    for column in unknown:
        parsed.problems.append(
            Problem(
                f"unknown column; {kind.name} has {', '.join(kind.fields)}", column, 1, source.name
            )
        )
    missing = [f for f in kind.key if f not in header]
    for column in missing:
        parsed.problems.append(Problem("missing key column", column, 1, source.name))
    if unknown or missing:
        return parsed
    seen: dict[tuple[Any, ...], int] = {}
    for values in reader:
        line = reader.line_num
        if None in values:  # more cells than the header has columns
            parsed.problems.append(Problem("more cells than columns", None, line, source.name))
            continue
        try:
            record = kind.record.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                column, reason = problem_place(error)
                parsed.problems.append(Problem(reason, column, line, source.name))
            continue
        key = service.key_of(kind, record)
        if key in seen:
            parsed.problems.append(
                Problem(f"same key as line {seen[key]}", kind.key[-1], line, source.name)
            )
            continue
        seen[key] = line
        parsed.records.append(record)
        parsed.rows.append(line)
    return parsed


@dataclass
class ImportReport:
    """What an import did (or, checked only, would do), per kind."""

    results: dict[str, WriteResult] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    checked_only: bool = False

    def summary(self) -> str:
        """One line per kind: created, updated, unchanged."""
        lines = []
        for name, result in self.results.items():
            lines.append(
                f"{name}: {len(result.created)} created, {len(result.updated)} updated,"
                f" {result.unchanged} unchanged"
            )
        verb = (
            "would be written (checked only, nothing written)" if self.checked_only else ("written")
        )
        return "\n".join([*lines, f"{len(self.files)} file(s) {verb}"])


Progress = Callable[[str, int, int], None]  # kind, rows done, rows in all


def import_fleet(
    conn: psycopg.Connection,
    *,
    path: Path,
    at: datetime,
    check: bool = False,
    chunk: int = 5000,
    progress: Progress | None = None,
) -> ImportReport:
    """Upsert every record of an import by natural key in one transaction: all or nothing. A
    ``FleetError`` lists the problems (file, line, column); ``check`` rolls back at the end."""
    sources = read_sources(path)
    parsed = [parse(source) for source in sources]
    problems = [p for item in parsed for p in item.problems]
    if problems:
        raise FleetError(problems)
    report = ImportReport(files=[s.name for s in sources], checked_only=check)
    total = sum(len(item.records) for item in parsed)
    done = 0
    with conn.transaction(force_rollback=check):
        for item in parsed:
            kind = item.source.kind
            result = report.results.setdefault(kind.name, WriteResult())
            for start in range(0, len(item.records), chunk):
                records = item.records[start : start + chunk]
                result += service.write(
                    conn,
                    kind=kind,
                    records=records,
                    rows=item.rows[start : start + chunk],
                    source=item.source.name,
                    at=at,
                    sync_firms=False,
                )
                done += len(records)
                if progress is not None:
                    progress(kind.name, done, total)
            if len(item.records) > chunk:  # the next kinds' lookups see the real table
                service.analyze(conn, kinds=[kind])
        # devices and contracts name their device first in their key: sync those once
        # devices and contracts name their device first in their key: sync those once
        touched = sorted(
            {
                service.key_of(item.source.kind, record)[0]
                for item in parsed
                if item.source.kind.name in ("devices", "contracts")
                for record in item.records
            }
        )
        if touched:
            service.sync_firm_in_force(conn, now=at, device_ids=touched)
    return report


def csv_cell(value: Any) -> str:
    """A value as an import file writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def export_fleet(
    conn: psycopg.Connection, *, folder: Path, include_retired: bool = False
) -> dict[str, int]:
    """Write one CSV per kind in the import format; returns rows written per kind."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for kind in KINDS.values():
        rows = service.list_records(conn, kind=kind, include_retired=include_retired)
        with (folder / f"{kind.name}.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(kind.fields)
            for row in rows:
                writer.writerow([csv_cell(row[f]) for f in kind.fields])
        written[kind.name] = len(rows)
    return written


# -- gateway configuration ---------------------------------------------------------------------


def gateway_config(
    *,
    gateway_id: str,
    devices: list[dict[str, Any]],
    broker_url: str,
    data_dir: str | None = None,
    password_file: str | None = None,
) -> str:
    """The TOML ``vigil gateway --config`` runs for a gateway's registered devices; a device
    without a Modbus address or a built-in profile is an error naming it."""
    problems: list[Problem] = []
    entries: list[dict[str, Any]] = []
    for device in devices:
        if device["modbus_host"] is None:
            problems.append(
                Problem(
                    "has no Modbus address (modbus_host)",
                    "modbus_host",
                    source=f"device {device['id']}",
                )
            )
            continue
        try:
            builtin_profile(device["model"])
        except KeyError:
            problems.append(
                Problem(
                    f"model {device['model']!r} is no built-in profile"
                    f" ({', '.join(builtin_models())})",
                    "model",
                    source=f"device {device['id']}",
                )
            )
            continue
        entries.append(
            {
                "id": device["id"],
                "profile": device["model"],
                "host": device["modbus_host"],
                "port": device["modbus_port"],
                "unit": device["modbus_unit"],
            }
        )
    if problems:
        raise FleetError(problems)
    if not entries:
        raise FleetError(
            [
                Problem(
                    "no device in service is registered behind it", source=f"gateway {gateway_id}"
                )
            ]
        )
    broker: dict[str, Any] = {"url": broker_url, "username": gateway_id}
    if password_file:
        broker["password_file"] = password_file
    document: dict[str, Any] = {
        "gateway_id": gateway_id,
        "data_dir": data_dir or f"/var/lib/vigil-gateway/{gateway_id}",
        "broker": broker,
        "devices": entries,
    }
    header = f"# Gateway {gateway_id}: written by `vigil fleet gateway-config` from the registry.\n"
    return header + tomli_w.dumps(document)


# -- MQTT credentials ---------------------------------------------------------------------------

# The platform's own broker users and what each may do (docs/fleet.md).
SERVICES: dict[str, tuple[str, ...]] = {
    "ingest": (f"topic read {PREFIX}/#",),
    "platform": (
        f"topic write {PREFIX}/cmd/#",
        f"topic read {PREFIX}/cmd-result/#",
        f"topic read {PREFIX}/status/#",
    ),
    "alerts": ("topic write vigil/alerts/#",),
}
_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes


def new_password() -> str:
    """A fresh random password (32 characters, URL-safe)."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto's ``$7$`` PBKDF2-SHA512 hash of a password, as ``mosquitto_passwd`` writes it."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$" + (
        base64.b64encode(digest).decode()
    )


def service_username(name: str) -> str:
    """The broker user of a platform service (``vigil-ingest``)."""
    return f"vigil-{name}"


def acl_lines(username: str, principal_type: str) -> Iterator[str]:
    """The ACL of one broker user: a gateway (or a smart pole, its own gateway) publishes only
    under its own id and reads only its own commands; a service does its job."""
    yield f"user {username}"
    if principal_type == "service":
        yield from SERVICES[username.removeprefix("vigil-")]
        return
    for channel in ("telemetry", "events", "cmd-result"):
        yield f"topic write {PREFIX}/{channel}/{username}/+"
    yield f"topic write {PREFIX}/status/{username}"
    yield f"topic write {PREFIX}/health/{username}"
    yield f"topic read {PREFIX}/cmd/{username}/+"


def broker_files(credentials: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The text of Mosquitto's ``password_file`` and ``acl_file`` for these credentials."""
    passwords = "".join(f"{user}:{hashed}\n" for user, _, hashed in credentials)
    acl = ["# Written by `vigil fleet credentials` from the registry: edits are overwritten."]
    for user, principal_type, _ in credentials:
        acl += ["", *acl_lines(user, principal_type)]
    return passwords, "\n".join(acl) + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace a file atomically, readable by its owner only (a password file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


# -- the API's reads and writes (rule A2) -----------------------------------------------------


class Forbidden(PermissionError):
    """The caller's role may not do this, or not to this record."""


@dataclass(frozen=True, slots=True)
class Access:
    """A caller and its device scope (a condition over alias ``d``, from api.scope)."""

    viewer: Viewer
    devices: sql.Composable
    params: dict[str, Any]

    def all_params(self) -> dict[str, Any]:
        """Parameters of both the device scope and the registry's scopes."""
        return self.params | service.viewer_params(self.viewer)


def read_records(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    access: Access,
    include_retired: bool = False,
    limit: int = 500,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The records of ``kind`` the caller may read."""
    scope = service.read_scope(kind=kind, viewer=access.viewer, devices=access.devices)
    return service.list_records(
        conn,
        kind=kind,
        scope=scope,
        scope_params=access.all_params(),
        include_retired=include_retired,
        limit=limit,
        offset=offset,
    )


def read_record(
    conn: psycopg.Connection, *, kind: Kind, key: tuple[Any, ...], access: Access
) -> dict[str, Any]:
    """One record the caller may read (``NotFound`` otherwise: never say it exists)."""
    scope = service.read_scope(kind=kind, viewer=access.viewer, devices=access.devices)
    return service.get(conn, kind=kind, key=key, scope=scope, scope_params=access.all_params())


def _allow(access: Access, action: Action, kind: Kind) -> None:
    if not may(access.viewer.role, action, kind.name):
        raise Forbidden(f"a {access.viewer.role} may not {action.value} {kind.name}")


def _writable_after(
    conn: psycopg.Connection, *, kind: Kind, key: tuple[Any, ...], access: Access
) -> None:
    scope = service.write_scope(kind=kind, viewer=access.viewer)
    if not service.in_scope(conn, kind=kind, key=key, scope=scope, params=access.all_params()):
        raise Forbidden(f"{kind.name} {'/'.join(map(str, key))} would be outside your scope")


def create_record(
    conn: psycopg.Connection, *, kind: Kind, record: FleetRecord, access: Access, at: datetime
) -> dict[str, Any]:
    """Create a record (``FleetError`` when its key exists or a name is unknown); the caller must
    be able to write it afterwards, or nothing is kept."""
    _allow(access, Action.CREATE, kind)
    service.write(conn, kind=kind, records=[record], at=at, create_only=True)
    key = service.key_of(kind, record)
    _writable_after(conn, kind=kind, key=key, access=access)
    return service.get(conn, kind=kind, key=key)


def update_record(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    key: tuple[Any, ...],
    changes: dict[str, Any],
    access: Access,
    at: datetime,
) -> dict[str, Any]:
    """Change fields of a record the caller may write; the natural key cannot change."""
    _allow(access, Action.UPDATE, kind)
    current = read_record(conn, kind=kind, key=key, access=access)
    _writable_after(conn, kind=kind, key=key, access=access)
    moved = [f for f in kind.key if f in changes and changes[f] != current[f]]
    if moved:
        raise FleetError([Problem("the natural key cannot change; retire and create", moved[0])])
    merged = service.record_of(kind, current).model_dump() | changes
    try:
        record = kind.record.model_validate(merged)
    except ValidationError as exc:
        raise FleetError([Problem(r, c) for c, r in map(problem_place, exc.errors())]) from None
    service.write(conn, kind=kind, records=[record], at=at)
    _writable_after(conn, kind=kind, key=key, access=access)
    return service.get(conn, kind=kind, key=key)


def retire_record(
    conn: psycopg.Connection, *, kind: Kind, key: tuple[Any, ...], access: Access, at: datetime
) -> dict[str, Any]:
    """Retire a record the caller may write; its history stays."""
    _allow(access, Action.RETIRE, kind)
    read_record(conn, kind=kind, key=key, access=access)
    _writable_after(conn, kind=kind, key=key, access=access)
    service.retire(conn, kind=kind, key=key, at=at)
    if kind.name == "components":
        return {"retired": True}
    return service.get(conn, kind=kind, key=key)
