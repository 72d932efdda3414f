"""``vigil alerts list|ack|clear|gaps``: look at and act on alarms from a shell."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import psycopg

from alerts import service
from alerts.models import AlarmError, AlarmState
from vigil.clock import make_clock
from vigil.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``alerts`` subcommand."""
    alerts = sub.add_parser("alerts", help="alarms: list, acknowledge, clear; roster gaps")
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="open alarms, newest first")
    listing.add_argument("--all", action="store_true", help="cleared ones too")
    listing.add_argument("--type", help="only this alarm type")
    listing.set_defaults(handler=_list)
    for name, handler, what in (
        ("ack", _ack, "acknowledge an alarm (stops its escalation)"),
        ("clear", _clear, "clear an alarm"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("alarm_id", type=int)
        action.add_argument("--by", required=True, help="who does it (recorded)")
        action.set_defaults(handler=handler)
    gaps = actions.add_parser("gaps", help="on-call roster gaps of a firm (rule R3)")
    gaps.add_argument("firm_id", type=int)
    gaps.add_argument("--hours", type=float, default=24.0, help="how far ahead to look")
    gaps.set_defaults(handler=_gaps)


def _connect(settings: Settings) -> psycopg.Connection | None:
    if not settings.database_url:
        print("vigil: set VIGIL_DATABASE_URL (or database_url in the config)", file=sys.stderr)
        return None
    return psycopg.connect(settings.database_url, autocommit=True)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    conn = _connect(settings)
    if conn is None:
        return 2
    states = list(AlarmState) if args.all else [AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED]
    with conn:
        alarms = service.list_alarms(conn, states=states, type=args.type)
    for alarm in alarms:
        print(
            f"{alarm.id:>6}  {alarm.state.value:<12} {alarm.severity.value:<8} {alarm.type:<24} "
            f"{alarm.source_type}:{alarm.source_id}  x{alarm.trigger_count}  "
            f"{alarm.raised_at.isoformat()}  {alarm.message}"
        )
    print(f"{len(alarms)} alarm(s)")
    return 0


def _change(args: argparse.Namespace, settings: Settings, *, clear: bool) -> int:
    conn = _connect(settings)
    if conn is None:
        return 2
    now = make_clock(kind="real").now()
    try:
        with conn:
            if clear:
                alarm = service.clear_alarm(conn, alarm_id=args.alarm_id, by=args.by, at=now)
            else:
                alarm = service.acknowledge_alarm(conn, alarm_id=args.alarm_id, by=args.by, at=now)
    except AlarmError as exc:
        print(f"vigil alerts: {exc}", file=sys.stderr)
        return 1
    print(f"alarm {alarm.id}: {alarm.state.value}")
    return 0


def _ack(args: argparse.Namespace, settings: Settings) -> int:
    return _change(args, settings, clear=False)


def _clear(args: argparse.Namespace, settings: Settings) -> int:
    return _change(args, settings, clear=True)


def _gaps(args: argparse.Namespace, settings: Settings) -> int:
    conn = _connect(settings)
    if conn is None:
        return 2
    now = make_clock(kind="real").now()
    with conn:
        found = service.roster_gaps(
            conn, firm_id=args.firm_id, start=now, end=now + timedelta(hours=args.hours)
        )
    for gap in found:
        print(f"nobody on call from {gap.start.isoformat()} to {gap.end.isoformat()}")
    print(f"{len(found)} gap(s) in the next {args.hours:g} h")
    return 1 if found else 0
