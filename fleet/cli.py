"""``vigil fleet``: import and export the registry, a gateway's configuration, MQTT credentials.

    vigil fleet import FILE|FOLDER|ZIP [--check]
    vigil fleet export FOLDER [--include-retired]
    vigil fleet gateway-config GATEWAY_ID [--broker-url URL] [--data-dir DIR] [--output FILE]
    vigil fleet credentials ID (--gateway | --device | --service) --password-file F --acl-file F

docs/fleet.md is the reference.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import psycopg

from vigil.clock import make_clock
from vigil.config import Settings
from vigil.progress import bar as progress_bar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fleet`` subcommand and its actions."""
    parser = sub.add_parser("fleet", help="the fleet registry: import, export, gateway configs")
    actions = parser.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    load = actions.add_parser("import", help="upsert CSV files (a file, folder or ZIP)")
    load.add_argument("path", type=Path)
    load.add_argument("--check", action="store_true", help="validate and report; write nothing")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(handler=_import)

    dump = actions.add_parser("export", help="write the registry as CSV files (import format)")
    dump.add_argument("folder", type=Path)
    dump.add_argument("--include-retired", action="store_true")
    dump.set_defaults(handler=_export)

    config = actions.add_parser("gateway-config", help="print a gateway's TOML configuration")
    config.add_argument("gateway_id")
    config.add_argument("--broker-url", help="default: the settings' mqtt_url")
    config.add_argument("--data-dir", help="the gateway's buffer folder")
    config.add_argument("--password-file", help="where the gateway keeps its MQTT password")
    config.add_argument("--output", type=Path, help="write to a file instead of stdout")
    config.set_defaults(handler=_gateway_config)

    creds = actions.add_parser(
        "credentials", help="issue MQTT credentials and rewrite the broker's password and ACL files"
    )
    creds.add_argument("principal", help="gateway id, smart pole id, or service (ingest...)")
    who = creds.add_mutually_exclusive_group()
    who.add_argument("--gateway", action="store_const", dest="principal_type", const="gateway")
    who.add_argument(
        "--device",
        action="store_const",
        dest="principal_type",
        const="device",
        help="a device that publishes itself (a smart pole)",
    )
    who.add_argument(
        "--service",
        action="store_const",
        dest="principal_type",
        const="service",
        help="a platform service: ingest, platform or alerts",
    )
    who.add_argument(
        "--revoke",
        action="store_const",
        dest="principal_type",
        const="revoke",
        help="revoke the principal's credential",
    )
    creds.add_argument("--password-file", type=Path, required=True, help="Mosquitto password_file")
    creds.add_argument("--acl-file", type=Path, required=True, help="Mosquitto acl_file")
    creds.add_argument("--secret-file", type=Path, help="write the new password here (0600)")
    creds.add_argument("--reload-pid", type=int, help="send SIGHUP to this Mosquitto afterwards")
    creds.set_defaults(handler=_credentials, principal_type="gateway")


def _connect(settings: Settings) -> psycopg.Connection | None:
    if not settings.database_url:
        print(
            "vigil fleet: set VIGIL_DATABASE_URL (or database_url in the config)", file=sys.stderr
        )
        return None
    return psycopg.connect(settings.database_url)


def _now(settings: Settings) -> datetime:
    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    return clock.now()


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from fleet import flows
    from fleet.models import FleetError

    conn = _connect(settings)
    if conn is None:
        return 2
    bar = None

    def progress(kind: str, done: int, total: int) -> None:
        nonlocal bar
        if args.quiet or total < 10_000:  # small files need no bar
            return
        if bar is None:
            bar = progress_bar(desc=kind, unit="row", total=total)
        bar.set_description(kind)
        bar.update(done - bar.n)

    with conn:
        try:
            report = flows.import_fleet(
                conn, path=args.path, at=_now(settings), check=args.check, progress=progress
            )
        except FleetError as exc:
            if bar is not None:
                bar.close()
            for problem in exc.problems:
                print(f"vigil fleet import: {problem}", file=sys.stderr)
            print(
                f"vigil fleet import: {len(exc.problems)} problem(s); nothing written",
                file=sys.stderr,
            )
            return 1
    if bar is not None:
        bar.close()
    print(report.summary())
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from fleet import flows

    conn = _connect(settings)
    if conn is None:
        return 2
    with conn:
        written = flows.export_fleet(conn, folder=args.folder, include_retired=args.include_retired)
    for kind, count in written.items():
        print(f"{args.folder / (kind + '.csv')}: {count} row(s)")
    return 0


def _gateway_config(args: argparse.Namespace, settings: Settings) -> int:
    from fleet import flows, service
    from fleet.models import FleetError

    broker_url = args.broker_url or settings.mqtt_url
    if not broker_url:
        print("vigil fleet gateway-config: give --broker-url (or set mqtt_url)", file=sys.stderr)
        return 2
    conn = _connect(settings)
    if conn is None:
        return 2
    with conn:
        if not service.principal_exists(conn, kind="gateway", principal_id=args.gateway_id):
            print(
                f"vigil fleet gateway-config: gateway {args.gateway_id!r} is not in service",
                file=sys.stderr,
            )
            return 1
        devices = service.gateway_devices(conn, gateway_id=args.gateway_id)
    try:
        text = flows.gateway_config(
            gateway_id=args.gateway_id,
            devices=devices,
            broker_url=broker_url,
            data_dir=args.data_dir,
            password_file=args.password_file,
        )
    except FleetError as exc:
        for problem in exc.problems:
            print(f"vigil fleet gateway-config: {problem}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"{args.output}: gateway {args.gateway_id}, {len(devices)} device(s)")
    else:
        sys.stdout.write(text)
    return 0


def _credentials(args: argparse.Namespace, settings: Settings) -> int:
    from fleet import flows, service

    conn = _connect(settings)
    if conn is None:
        return 2
    kind = args.principal_type
    username = args.principal
    password: str | None = None
    with conn:
        at = _now(settings)
        if kind == "revoke":
            if not service.revoke_credential(conn, username=username, at=at):
                print(
                    f"vigil fleet credentials: {username!r} has no credential in force",
                    file=sys.stderr,
                )
                return 1
        elif kind == "service":
            if username not in flows.SERVICES:
                print(
                    f"vigil fleet credentials: unknown service {username!r}; one of "
                    f"{', '.join(flows.SERVICES)}",
                    file=sys.stderr,
                )
                return 2
            username = flows.service_username(username)
        elif not service.principal_exists(conn, kind=kind, principal_id=username):
            print(
                f"vigil fleet credentials: {kind} {username!r} is not in service", file=sys.stderr
            )
            return 1
        if kind != "revoke":
            password = flows.new_password()
            service.save_credential(
                conn,
                username=username,
                principal_type=kind,
                password_hash=flows.mosquitto_hash(password),
                at=at,
            )
        passwords, acl = flows.broker_files(service.live_credentials(conn))
        flows.write_private(args.password_file, passwords)
        flows.write_private(args.acl_file, acl)
    if args.reload_pid:
        os.kill(args.reload_pid, signal.SIGHUP)  # Mosquitto rereads both files
    if password is not None:
        if args.secret_file:
            flows.write_private(args.secret_file, password + "\n")
            print(f"{username}: password written to {args.secret_file}")
        else:
            print(f"{username}: {password}")
    print(f"{args.password_file}, {args.acl_file}: rewritten")
    return 0
