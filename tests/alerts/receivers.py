"""Real receivers for the alert channels: an HTTP server for webhooks, an SMTP server for mail."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from vigil.services import free_port


@dataclass
class Received:
    """One webhook request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at_monotonic: float


class _Waitable:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Any] = []

    def _add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def _wait(self, count: int, timeout: float) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(f"{len(self.items)} of {count} arrived after {timeout}s")
            return list(self.items)

    async def wait_for(self, count: int = 1, *, timeout: float = 10.0) -> list[Any]:
        """Wait (without blocking the event loop) until ``count`` items arrived."""
        return await asyncio.to_thread(self._wait, count, timeout)


class WebhookReceiver(_Waitable):
    """A real HTTP server; answers with the queued status codes, then 200."""

    def __init__(self, *, statuses: list[int] | None = None) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.hold = threading.Event()
        self.hold.set()  # clear it to make requests hang until set again
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.hold.wait(30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver._add(
                    Received(self.path, dict(self.headers.items()), body, time.monotonic())
                )

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        """Address of this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self._server.shutdown()
        self._server.server_close()


class SmtpReceiver(_Waitable):
    """A real SMTP server (aiosmtpd) in this process; collects the messages it accepts."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                message = message_from_bytes(envelope.content)
                receiver._add((list(envelope.rcpt_tos), message))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[tuple[list[str], Message]]:
        """Recipients and message of everything accepted."""
        return list(self.items)
