"""``vigil workorders``: set up what work orders count with.

    vigil workorders calendar FILE.csv [--check]

The calendar file lists, per jurisdiction, the public holidays and the make-up working days
(调休) of rule S3: columns ``jurisdiction`` (its code), ``day`` (YYYY-MM-DD), ``working``
(``yes`` for a make-up working day, ``no`` for a holiday) and ``name``. docs/workorders.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg

from vigil.config import Settings
from vigil.embedded import database

COLUMNS = ("jurisdiction", "day", "working", "name")
TRUTH = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class CalendarRow:
    """One declared day of a calendar file, with the line it came from."""

    line: int
    jurisdiction: str
    day: date
    working: bool
    name: str


class CalendarFileError(ValueError):
    """A calendar file that cannot be read; the message names file, line and column."""


def read_calendar(path: Path) -> list[CalendarRow]:
    """Parse a calendar file; every problem names the file, the line and the column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CalendarFileError(f"{path}: cannot read: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CalendarFileError(f"{path}:1: missing column(s) {', '.join(missing)}")
    rows, problems = [], []
    for record in reader:
        line = reader.line_num
        try:
            day = date.fromisoformat((record["day"] or "").strip())
        except ValueError:
            problems.append(f"{path}:{line}: day: not a date (YYYY-MM-DD): {record['day']!r}")
            continue
        working = TRUTH.get((record["working"] or "").strip().lower())
        if working is None:
            problems.append(f"{path}:{line}: working: yes or no, not {record['working']!r}")
            continue
        code = (record["jurisdiction"] or "").strip()
        if not code:
            problems.append(f"{path}:{line}: jurisdiction: empty")
            continue
        rows.append(CalendarRow(line, code, day, working, (record["name"] or "").strip()))
    if problems:
        raise CalendarFileError("\n".join(problems))
    return rows


def load_calendar(conn: psycopg.Connection, *, path: Path, rows: list[CalendarRow]) -> int:
    """Write the declared days in one transaction; an unknown jurisdiction names its line."""
    from workorders import service

    with conn.transaction():
        ids: dict[str, int] = {}
        for row in rows:
            if row.jurisdiction not in ids:
                found = service.jurisdiction_id_of(conn, code=row.jurisdiction)
                if found is None:
                    raise CalendarFileError(
                        f"{path}:{row.line}: jurisdiction: no jurisdiction {row.jurisdiction!r}"
                    )
                ids[row.jurisdiction] = found
            service.set_calendar_day(
                conn,
                jurisdiction_id=ids[row.jurisdiction],
                day=row.day,
                working=row.working,
                name=row.name,
            )
    return len(rows)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``workorders`` subcommand."""
    parser = sub.add_parser("workorders", help="work orders: the working-day calendar")
    actions = parser.add_subparsers(dest="workorders_command", required=True, metavar="ACTION")
    cal = actions.add_parser("calendar", help="load holidays and make-up working days (CSV)")
    cal.add_argument("path", type=Path)
    cal.add_argument("--check", action="store_true", help="validate the file; write nothing")
    cal.set_defaults(handler=_calendar)


def _calendar(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rows = read_calendar(args.path)
        if args.check:
            print(f"{args.path}: {len(rows)} day(s), valid")
            return 0
        with database(settings) as url, psycopg.connect(url, autocommit=True) as conn:
            written = load_calendar(conn, path=args.path, rows=rows)
    except CalendarFileError as exc:
        print(f"vigil workorders calendar: {exc}", file=sys.stderr)
        return 2
    print(f"{args.path}: {written} day(s) declared")
    return 0
