"""PostgreSQL LISTEN/NOTIFY channels that tell downstream processes what just landed.

Ingest notifies after each commit; compliance, rescue detection and the API's live stream
listen. Every API worker and every engine instance sees every notification, and nothing here
needs a single process. A payload stays under PostgreSQL's 8000-byte limit: large sets are split.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

EVENTS = "vigil_events"  # one notification per stored event
STATE = "vigil_state"  # devices whose latest state changed in a commit
COMMANDS = "vigil_commands"  # command results reported by gateways
ALERTS = "vigil_alerts"  # alarm and incident changes, for the live console
MAINTENANCE = "vigil_maintenance"  # a maintenance record was saved: {"device": id}
ESCALATIONS = "vigil_escalations"  # a lift's escalation state changed: device, state, from
AUTH = (
    "vigil_auth"  # a session or key revoked, a user deactivated: {"kind": "revocation", "of", "id"}
)

_MAX_PAYLOAD = 7900


@dataclass(frozen=True, slots=True)
class EventNotice:
    """An event that was committed to the ``events`` table."""

    id: int
    device: str
    metric: str
    ts: int  # device timestamp, ms since epoch
    value: float | None
    previous: float | None


@dataclass(frozen=True, slots=True)
class StateNotice:
    """Devices whose ``device_state`` rows changed in one commit."""

    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandNotice:
    """A command result that was committed to ``command_results``."""

    command_id: str
    device: str
    outcome: str
    ts: int


def event_payload(notice: EventNotice) -> str:
    """JSON text of an event notice."""
    return json.dumps(asdict(notice), separators=(",", ":"))


def state_payloads(devices: Iterable[str]) -> list[str]:
    """JSON texts for a set of changed devices, split to fit the payload limit."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 20
    for device in sorted(set(devices)):
        if chunk and size + len(device) + 3 > _MAX_PAYLOAD:
            payloads.append(json.dumps({"devices": chunk}, separators=(",", ":")))
            chunk, size = [], 20
        chunk.append(device)
        size += len(device) + 3
    if chunk:
        payloads.append(json.dumps({"devices": chunk}, separators=(",", ":")))
    return payloads


def command_payload(notice: CommandNotice) -> str:
    """JSON text of a command-result notice."""
    return json.dumps(asdict(notice), separators=(",", ":"))


def parse(channel: str, payload: str) -> EventNotice | StateNotice | CommandNotice | dict[str, Any]:
    """Typed notice for a known channel; the raw JSON object for others."""
    body = json.loads(payload)
    if channel == EVENTS:
        return EventNotice(**body)
    if channel == STATE:
        return StateNotice(tuple(body["devices"]))
    if channel == COMMANDS:
        return CommandNotice(**body)
    return body


def send(conn: psycopg.Connection, channel: str, payloads: Sequence[str]) -> None:
    """Queue notifications on ``conn``; PostgreSQL delivers them when its transaction commits."""
    for payload in payloads:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def asend(conn: psycopg.AsyncConnection, channel: str, payloads: Sequence[str]) -> None:
    """Async ``send``."""
    for payload in payloads:
        await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class Listener:
    """Listen on channels over a dedicated connection: ``async with Listener(url, [...]) as l``.

    LISTEN is in force once the ``async with`` is entered, so nothing committed after that is
    missed. Iterate the listener for notices; iterating again (after a ``break``, or in a new
    ``async for``) carries on where the last iteration stopped. psycopg delivers notices in
    batches from one generator: abandoning that generator mid-batch would drop the rest of the
    batch, so the listener keeps one generator for its whole life and hands notices out one by
    one.
    """

    def __init__(self, url: str, channels: Sequence[str]) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._conn: psycopg.AsyncConnection | None = None
        self._stream: AsyncGenerator[psycopg.Notify] | None = None

    async def __aenter__(self) -> Listener:
        self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        for channel in self._channels:
            await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.aclose()
        if self._conn is not None:
            await self._conn.close()

    async def next(self) -> EventNotice | StateNotice | CommandNotice | dict[str, Any]:
        """The next notice (waits for one)."""
        assert self._conn is not None, "use Listener in 'async with'"
        if self._stream is None:
            self._stream = self._conn.notifies()
        try:
            note = await anext(self._stream)
        except BaseException:
            # a cancelled or failed generator is finished (its unread backlog stays with the
            # connection): the next call starts a fresh one
            self._stream = None
            raise
        return parse(note.channel, note.payload)

    async def __aiter__(
        self,
    ) -> AsyncIterator[EventNotice | StateNotice | CommandNotice | dict[str, Any]]:
        while True:
            yield await self.next()
