"""The live stream of one API worker: LISTEN/NOTIFY in, scoped messages out.

Each worker listens on the kernel's channels over one dedicated connection, batches what
arrives, and asks the database once per batch and per distinct scope which of the devices
named in the batch each group of subscribers may see (rule A2, the same ``device_scope`` as the
REST queries). Every worker does the same, so it does not matter which worker a client is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.auth.models import Principal
from api.scope import alarm_scope, device_scope, device_scope_args
from vigil import notify
from vigil.clock import Clock

log = logging.getLogger(__name__)

# the kernel's channels, and the compliance engine's maintenance and escalation changes
MAINTENANCE_CHANNELS = (notify.MAINTENANCE, notify.ESCALATIONS)
CHANNELS = (
    notify.STATE,
    notify.EVENTS,
    notify.COMMANDS,
    notify.ALERTS,
    *MAINTENANCE_CHANNELS,
    notify.AUTH,  # revocations: the streams opened with them end at once
)
# how often (real seconds) streams are checked for credentials that expired on the clock
EXPIRY_CHECK_S = 0.25
_MAX_BATCH = 2000
_QUEUE_SIZE = 5000
_RECONNECT_S = (0.1, 0.25, 0.5, 1.0, 2.0)

Message = dict[str, Any]
Notice = notify.EventNotice | notify.StateNotice | notify.CommandNotice | dict[str, Any]


def notice_devices(notice: Notice) -> tuple[str, ...]:
    """The devices a notice is about (alert payloads name theirs as a device source or key)."""
    if isinstance(notice, notify.StateNotice):
        return notice.devices
    if isinstance(notice, notify.EventNotice | notify.CommandNotice):
        return (notice.device,)
    if notice.get("source_type") == "device":
        device = notice.get("source_id")
    else:
        device = notice.get("device") or notice.get("device_id")
    return (device,) if isinstance(device, str) else ()


def notice_alarm(notice: Notice) -> int | None:
    """The alarm an alerts-channel notice is about, if it is an alarm change."""
    if isinstance(notice, dict) and notice.get("kind") == "alarm":
        alarm = notice.get("id")
        return alarm if isinstance(alarm, int) else None
    return None


class Subscription:
    """One client's queue of messages."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(_QUEUE_SIZE)

    def put(self, message: Message | None) -> None:
        """Queue a message; a client too slow to keep up is told to reload (``resync``)."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait({"type": "resync", "reason": "client too slow"})


@dataclass(frozen=True, slots=True)
class DomainReads:
    """The reads of the domains that own devices and alarms, handed in by the composition root
    (``runtime.api``) so that the web plumbing imports no domain. Each takes an async
    connection and keyword arguments: ``scope``, ``scope_params`` and the ids asked about."""

    assets: Callable[..., Awaitable[Sequence[Any]]]  # the assets' current state, by device id
    visible_devices: Callable[..., Awaitable[set[str]]]  # which devices the scope covers
    visible_alarms: Callable[..., Awaitable[set[int]]]  # which alarms the scope covers


class Broadcaster:
    """Fans NOTIFY notices out to subscribers, each seeing only its scope."""

    def __init__(
        self,
        *,
        database_url: str,
        pool: AsyncConnectionPool,
        reads: DomainReads,
        clock: Clock,
    ) -> None:
        self._url = database_url
        self._pool = pool
        self._reads = reads
        self._clock = clock
        self._subscribers: set[Subscription] = set()
        self._inbox: asyncio.Queue[Notice] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once LISTEN is in force."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="live-listen"),
            asyncio.create_task(self._dispatch(), name="live-dispatch"),
            asyncio.create_task(self._expire(), name="live-expire"),
        ]
        listening = asyncio.create_task(self.listening.wait())
        done, _ = await asyncio.wait(
            [listening, self._tasks[0]], return_when=asyncio.FIRST_COMPLETED
        )
        if listening not in done:
            listening.cancel()
            self._tasks[0].result()  # re-raise why listening failed

    async def close(self) -> None:
        """Stop listening and end every subscriber's stream."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.end_streams()

    def end_streams(self) -> None:
        """End every open stream (at shutdown)."""
        for sub in list(self._subscribers):
            sub.put(None)
        self._subscribers.clear()

    def end(self, sub: Subscription, *, reason: str) -> None:
        """End one stream: it says why (``logout``) and closes."""
        self._subscribers.discard(sub)
        sub.put({"type": "logout", "reason": reason})
        sub.put(None)

    def revoked(self, notice: dict[str, Any]) -> int:
        """End the streams opened with a session or key just revoked, or by a user just
        deactivated; how many ended."""
        kind, ident = notice.get("of"), notice.get("id")
        ended = 0
        for sub in list(self._subscribers):
            principal = sub.principal
            if (kind == "user" and principal.user_id == ident) or (
                kind in ("session", "api_key")
                and principal.via == kind
                and principal.credential_id == ident
            ):
                self.end(sub, reason=f"{kind} revoked")
                ended += 1
        return ended

    async def _expire(self) -> None:
        """End streams whose session or key expired on the platform clock."""
        while True:
            now = self._clock.now()
            for sub in list(self._subscribers):
                ends = sub.principal.expires_at
                if ends is not None and ends <= now:
                    self.end(sub, reason="credentials expired")
            await asyncio.sleep(EXPIRY_CHECK_S)  # a real-time poll of in-memory state

    def subscribe(self, principal: Principal) -> Subscription:
        """A new subscription; everything committed after this call reaches it."""
        sub = Subscription(principal)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription."""
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        """How many streams are open on this worker."""
        return len(self._subscribers)

    async def _listen(self) -> None:
        attempt = 0
        connected_once = False
        while True:
            try:
                async with notify.Listener(self._url, CHANNELS) as listener:
                    if attempt:
                        # the database came back: drop pooled connections that died with it,
                        # then tell clients to reload what they may have missed
                        await self._pool.check()
                        for sub in list(self._subscribers):
                            sub.put({"type": "resync", "reason": "database reconnected"})
                        log.info("live stream listening again after %d attempt(s)", attempt)
                    attempt = 0
                    connected_once = True
                    self.listening.set()
                    async for notice in listener:
                        self._inbox.put_nowait(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: keep trying
                # At start a database that never answers is a configuration error: fail. Once
                # it has answered, an outage of any length is waited out (it used to give up
                # after five tries, leaving every stream silent until the API restarted).
                if not connected_once and attempt >= len(_RECONNECT_S):
                    raise
                self.listening.clear()
                delay = _RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)]
                if attempt == 0:
                    log.warning("live stream lost its database connection (%s); retrying", exc)
                attempt += 1
                await asyncio.sleep(delay)  # real-time back-off of a network retry

    async def _dispatch(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while not self._inbox.empty() and len(batch) < _MAX_BATCH:
                batch.append(self._inbox.get_nowait())
            revocations = [n for n in batch if _is_revocation(n)]
            for notice in revocations:
                self.revoked(notice)  # type: ignore[arg-type]
            batch = [n for n in batch if not _is_revocation(n)]
            if not self._subscribers or not batch:
                continue
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live stream could not deliver %d notices", len(batch))
                for sub in list(self._subscribers):
                    sub.put({"type": "resync", "reason": "delivery failed"})

    async def _deliver(self, batch: Sequence[Notice]) -> None:
        groups: dict[tuple[str, int | None], list[Subscription]] = {}
        for sub in self._subscribers:
            groups.setdefault(device_scope(sub.principal).key, []).append(sub)
        changed = sorted({d for n in batch if isinstance(n, notify.StateNotice) for d in n.devices})
        named = sorted({d for n in batch for d in notice_devices(n)})
        alarms = sorted({a for n in batch if (a := notice_alarm(n)) is not None})
        async with self._pool.connection() as conn:
            for subs in groups.values():
                principal = subs[0].principal
                alarm_sql = alarm_scope(principal)
                assets = (
                    await self._reads.assets(
                        conn, **device_scope_args(principal), device_ids=changed
                    )
                    if changed
                    else []
                )
                visible = (
                    await self._reads.visible_devices(
                        conn, **device_scope_args(principal), device_ids=named
                    )
                    if named
                    else set()
                )
                seen_alarms = (
                    await self._reads.visible_alarms(
                        conn,
                        scope=alarm_sql.condition,
                        scope_params=alarm_sql.params,
                        alarm_ids=alarms,
                    )
                    if alarms
                    else set()
                )
                messages = [{"type": "state", "asset": a} for a in assets] + [
                    m for n in batch if (m := _message(n, visible, seen_alarms)) is not None
                ]
                for sub in subs:
                    for message in messages:
                        sub.put(message)


def _is_revocation(notice: Notice) -> bool:
    return isinstance(notice, dict) and notice.get("kind") == "revocation"


def _message(notice: Notice, visible: set[str], alarms: set[int]) -> Message | None:
    """The client message for a non-state notice the subscriber may see, else None."""
    if isinstance(notice, notify.StateNotice):
        return None
    alarm = notice_alarm(notice)
    if alarm is not None:
        return {"type": "alert", "alert": notice} if alarm in alarms else None
    if not any(d in visible for d in notice_devices(notice)):
        return None
    if isinstance(notice, notify.EventNotice):
        return {"type": "event", "event": asdict(notice)}
    if isinstance(notice, notify.CommandNotice):
        return {"type": "command", "command": asdict(notice)}
    if "kind" not in notice:  # the maintenance channels carry no kind: a record or escalation
        return {"type": "maintenance", "maintenance": notice}
    return {"type": "alert", "alert": notice}
