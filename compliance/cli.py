"""Subcommands: ``vigil audit verify|checkpoint|export|verify-bundle`` (rule A1),
``vigil rescue coverage`` (R8), ``vigil policy show|set`` (the thresholds of rules L1-L5 and E1-E4).

``vigil compliance`` (the engine that runs every domain's runners) is the composition root's:
see ``runtime.cli``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from pathlib import Path

import psycopg

from vigil.clock import make_clock
from vigil.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compliance`` and ``audit`` subcommands."""

    audit = sub.add_parser("audit", help="compliance log tools (verify, checkpoint)")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="verify the hash chain and signed checkpoints")
    verify.add_argument(
        "--public-key",
        help="trusted Ed25519 public key (64 hex digits); default: the configured signing key's",
    )
    verify.set_defaults(handler=_verify)
    checkpoint = actions.add_parser("checkpoint", help="sign a tree head of the log now")
    checkpoint.set_defaults(handler=_checkpoint)
    export = actions.add_parser(
        "export", help="write a self-contained bundle of a scope's entries for a regulator"
    )
    scope = export.add_mutually_exclusive_group()
    scope.add_argument("--jurisdiction", metavar="CODE", help="entries about its assets")
    scope.add_argument("--firm", metavar="ID", type=int, help="entries about its assets")
    export.add_argument("--since", type=_instant, help="from this time (ISO 8601 with a zone)")
    export.add_argument("--until", type=_instant, help="before this time")
    export.add_argument("--out", type=Path, required=True, help="the bundle file to write")
    export.add_argument(
        "--no-sign",
        action="store_true",
        help="do not sign a fresh tree head first (entries after the last one are left out)",
    )
    export.set_defaults(handler=_export)
    check = actions.add_parser(
        "verify-bundle", help="verify a bundle offline (no database, no network)"
    )
    check.add_argument("file", type=Path)
    check.add_argument("--public-key", required=True, help="the trusted Ed25519 key, hex")
    check.set_defaults(handler=_verify_bundle)

    rescue = sub.add_parser("rescue", help="rescue reports (coverage)")
    rescue_actions = rescue.add_subparsers(dest="rescue_command", required=True, metavar="ACTION")
    coverage = rescue_actions.add_parser(
        "coverage",
        help="rule R8: each contracted elevator's travel time against its rescue deadline",
    )
    coverage.add_argument("--firm", type=int, help="only this firm's elevators")
    coverage.set_defaults(handler=_coverage)

    policy = sub.add_parser(
        "policy", help="thresholds of the lighting and meter rules (L1-L5, E1-E4): show, set"
    )
    policy_actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    for name, helptext in (
        ("show", "print the defaults, or a jurisdiction's or device's row"),
        ("set", "set thresholds (NAME=VALUE; VALUE 'inherit' clears an override)"),
    ):
        action = policy_actions.add_parser(name, help=helptext)
        owner = action.add_mutually_exclusive_group()
        owner.add_argument("--jurisdiction", metavar="CODE", help="a jurisdiction's row")
        owner.add_argument("--device", metavar="ID", help="a device's row")
        if name == "set":
            action.add_argument("values", nargs="+", metavar="NAME=VALUE")
        action.set_defaults(handler=_policy)


def _database_url(settings: Settings) -> str | None:
    if not settings.database_url:
        print("vigil: set VIGIL_DATABASE_URL (or database_url in the config)", file=sys.stderr)
    return settings.database_url


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from compliance.log import flows, service
    from vigil import progress

    url = _database_url(settings)
    if url is None:
        return 2
    public_key = args.public_key
    if public_key is None:
        key_path = flows.signing_key_path(settings)
        if key_path.exists():
            public_key = flows.public_key_hex(flows.load_or_create_key(key_path))
    with psycopg.connect(url) as conn:
        total = service.head(conn)[0] if progress.is_shown() else None
        result = flows.verify(
            conn,
            public_key=public_key,
            progress=lambda rows: progress.counted(
                rows, desc="verifying", unit="entry", total=total
            ),
        )
    if result.problem is not None:
        print(f"compliance log: TAMPERED: first bad entry {result.problem}")
    for line in result.checkpoint_problems:
        print(f"compliance log: {line}")
    if result.ok:
        checked = "checked" if public_key else "present, signatures not checked (no key)"
        print(
            f"compliance log: OK, {result.entries} entries, head {result.head_hash}, "
            f"{result.checkpoints} checkpoint(s) {checked}"
        )
        return 0
    return 1


def _coverage(args: argparse.Namespace, settings: Settings) -> int:
    """Print rule R8's coverage table; exit 1 when an elevator cannot be reached in time."""
    from compliance.rescue import flows, service

    url = _database_url(settings)
    if url is None:
        return 2
    today = make_clock(kind="real").now().date()
    with psycopg.connect(url) as conn:
        rows = flows.coverage(conn, estimator=flows.StraightLineEstimator())
        loads = service.firm_loads(conn, today=today)
    rows = [r for r in rows if args.firm is None or r.firm_id == args.firm]
    print("device\tfirm\ttier\tdeadline_min\tnearest_point\ttravel_min\twithin_deadline")
    for r in rows:
        travel = "" if r.travel_minutes is None else f"{r.travel_minutes:.1f}"
        print(
            f"{r.device_id}\t{r.firm_id}\t{r.tier}\t{r.deadline_minutes}\t"
            f"{r.nearest_point or ''}\t{travel}\t{'yes' if r.within_deadline else 'NO'}"
        )
    for load in loads:
        if args.firm is None or load.firm_id == args.firm:
            per = load.elevators_per_technician
            print(
                f"firm {load.firm_id}: {load.elevators} elevators, {load.technicians} qualified "
                f"technicians ({'-' if per is None else f'{per:.1f}'} per technician)"
            )
    outside = sum(not r.within_deadline for r in rows)
    print(f"{len(rows)} elevator(s), {outside} outside their deadline")
    return 1 if outside else 0


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from compliance.log import flows

    url = _database_url(settings)
    if url is None:
        return 2
    clock = make_clock(kind="real")
    key = flows.load_or_create_key(flows.signing_key_path(settings))
    with psycopg.connect(url) as conn:
        made = flows.create_checkpoint(conn, key=key, at=clock.now(), force=True)
    assert made is not None
    print(
        f"checkpoint {made.id}: tree head of {made.entry_count} entries, root {made.root_hash}, "
        f"head {made.head_hash}, signed {made.signed_at.isoformat()} by {made.public_key}"
    )
    return 0


def _jurisdiction_id(conn: psycopg.Connection, code: str) -> int | None:
    """The id of the jurisdiction of this code; None (said on stderr) when there is none."""
    row = conn.execute("SELECT id FROM jurisdictions WHERE code = %s", (code,)).fetchone()
    if row is None:
        print(f"vigil: no jurisdiction {code!r}", file=sys.stderr)
        return None
    return int(row[0])


def _policy_values(pairs: list[str]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"{pair!r}: give NAME=VALUE")
        try:
            values[name] = None if text in ("inherit", "null", "") else float(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number (or 'inherit')") from None
    return values


def _policy(args: argparse.Namespace, settings: Settings) -> int:
    """``vigil policy show|set``: one policy row, changed through the same flow as the API."""
    from compliance.conditions import flows, service

    url = _database_url(settings)
    if url is None:
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        owner: dict[str, object] = {}
        if args.jurisdiction is not None:
            jurisdiction = _jurisdiction_id(conn, args.jurisdiction)
            if jurisdiction is None:
                return 2
            owner["jurisdiction_id"] = jurisdiction
        elif args.device is not None:
            known = conn.execute("SELECT 1 FROM devices WHERE id = %s", (args.device,))
            if known.fetchone() is None:
                print(f"vigil: no device {args.device!r}", file=sys.stderr)
                return 2
            owner["device_id"] = args.device
        if args.policy_command == "set":
            try:
                values = _policy_values(args.values)
                found = flows.change_policy(
                    conn,
                    values=values,
                    actor=f"cli:{getpass.getuser()}",
                    at=make_clock(kind="real").now(),
                    **owner,
                )
            except ValueError as exc:
                print(f"vigil: policy refused: {exc}", file=sys.stderr)
                return 2
        else:
            found = service.policy_row(conn, **owner)  # type: ignore[arg-type]
        for name in service.ALL_POLICY_COLUMNS:
            value = None if found is None else found[name]
            print(f"{name}\t{'inherit' if value is None else f'{value:g}'}")
    return 0


def _instant(text: str) -> datetime:
    from pydantic import TypeAdapter, ValidationError

    from vigil.clock import Instant

    try:
        return TypeAdapter(Instant).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give ISO 8601 with a zone, e.g. 2026-11-01T00:00:00+08:00"
        ) from None


def _export(args: argparse.Namespace, settings: Settings) -> int:
    """``vigil audit export``: sign a tree head, then write the scope's bundle."""
    from psycopg import sql

    from compliance.log import flows
    from vigil import progress

    url = _database_url(settings)
    if url is None:
        return 2
    key = flows.load_or_create_key(flows.signing_key_path(settings))
    with psycopg.connect(url, autocommit=True) as conn:
        devices: sql.Composable | None = None
        params: dict[str, object] = {}
        scope: dict[str, object] = {"since": args.since, "until": args.until}
        if args.jurisdiction is not None:
            jurisdiction = _jurisdiction_id(conn, args.jurisdiction)
            if jurisdiction is None:
                return 2
            devices = sql.SQL(
                "d.site_id IN (SELECT id FROM sites WHERE jurisdiction_id = %(scope_id)s)"
            )
            params = {"scope_id": jurisdiction}
            scope["jurisdiction"] = args.jurisdiction
        elif args.firm is not None:
            devices, params = sql.SQL("d.firm_id = %(scope_id)s"), {"scope_id": args.firm}
            scope["firm_id"] = args.firm
        try:
            bundle = flows.export_bundle(
                conn,
                key=key,
                scope={
                    k: v.isoformat() if isinstance(v, datetime) else v for k, v in scope.items()
                },
                devices=devices,
                device_params=params,
                at=make_clock(kind="real").now(),
                since=args.since,
                until=args.until,
                sign_head=not args.no_sign,
                progress=lambda rows: progress.counted(
                    rows, desc="proving", unit="entry", total=len(rows)
                ),
            )
        except flows.LogTampered as exc:
            print(f"vigil audit export: {exc}", file=sys.stderr)
            return 1
    args.out.write_text(json.dumps(bundle, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    heads = bundle["tree_heads"]
    print(
        f"{args.out}: {len(bundle['entries'])} entries, {len(heads)} signed tree head(s) up to "
        f"{heads[-1]['tree_size']} entries; key fingerprint {bundle['public_key_fingerprint']}"
    )
    return 0


def _text(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _verify_bundle(args: argparse.Namespace, settings: Settings) -> int:
    """``vigil audit verify-bundle``: no database, no network."""
    from compliance.log import bundle

    return bundle.report(args.file, public_key=args.public_key)
