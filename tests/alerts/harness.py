"""Helpers to run a runner in the background and to await live notices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from vigil import notify
from vigil.config import Settings


def settings_for(**alerts: Any) -> Settings:
    """Default settings with some [alerts] values replaced."""
    base = Settings()
    return base.model_copy(update={"alerts": base.alerts.model_copy(update=alerts)})


@contextlib.asynccontextmanager
async def running(run: Callable[..., Any], **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``run(stop=..., **kwargs)`` as a task; stop it (and surface its errors) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop=stop, **kwargs))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


class Notices:
    """Every notice on some channels, with a way to await one that matches."""

    def __init__(self, url: str, channels: list[str] | None = None) -> None:
        self._listener = notify.Listener(url, channels or [notify.ALERTS])
        self.seen: list[Any] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Notices:
        await self._listener.__aenter__()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._listener.__aexit__(*exc)

    async def _collect(self) -> None:
        async for notice in self._listener:
            async with self._changed:
                self.seen.append(notice)
                self._changed.notify_all()

    async def wait(
        self, match: Callable[[Any], bool], *, count: int = 1, timeout: float = 10.0
    ) -> list[Any]:
        """Wait until ``count`` notices matching ``match`` have been seen; returns them."""

        async def enough() -> list[Any]:
            async with self._changed:
                await self._changed.wait_for(lambda: sum(1 for n in self.seen if match(n)) >= count)
                return [n for n in self.seen if match(n)]

        return await asyncio.wait_for(enough(), timeout)


def attempt(*, status: str | None = None, ok: bool | None = None) -> Callable[[Any], bool]:
    """Matcher for delivery-attempt notices."""

    def match(notice: Any) -> bool:
        return (
            isinstance(notice, dict)
            and notice.get("kind") == "delivery_attempt"
            and (status is None or notice["status"] == status)
            and (ok is None or notice["ok"] == ok)
        )

    return match
