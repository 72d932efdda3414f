"""HTTP plumbing the routes share: every error a route can answer documented in the schema, and
``OPTIONS`` and ``405`` answers whose ``Allow`` lists every method the path really has."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import READ_METHODS, current_principal
from vigil.metrics import HTTP_LATENCY, HTTP_REQUESTS


class ErrorOut(BaseModel):
    """Why a request was refused."""

    detail: str


def _calls(dependant: Dependant) -> Iterable[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _api_routes(routes: Iterable[Any]) -> Iterable[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI keeps them nested from 0.16x)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(inner.routes)


def document_errors(app: FastAPI) -> None:
    """Add to each route's schema the 4xx answers it can give besides its own: 400 (a value the
    database refuses, answered by the app's handler), 401 (no or bad credentials), 403 (a role
    check, or a write with a read-only API key) and 422 (malformed parameters or body)."""
    for route in _api_routes(app.router.routes):
        calls = list(_calls(route.dependant))
        authenticated = current_principal in calls
        role_checked = any(getattr(call, "roles", None) for call in calls)
        writes = bool(route.methods - READ_METHODS)
        extra: dict[int | str, dict[str, Any]] = {}
        has_input = bool(
            route.dependant.query_params
            or route.dependant.path_params
            or route.dependant.body_params
        )
        if has_input:
            extra["400"] = {"description": "a value the request may not carry", "model": ErrorOut}
        if authenticated:
            extra["401"] = {"description": "not authenticated, or expired", "model": ErrorOut}
        if authenticated and (role_checked or writes):
            extra["403"] = {
                "description": "the caller's role may not do this, or a read-only key writes",
                "model": ErrorOut,
            }
        for code, answer in extra.items():
            if code not in route.responses and int(code) not in route.responses:
                route.responses[code] = answer


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class AllowedMethods:
    """ASGI middleware: ``OPTIONS`` on a path answers 204 with every method its routes take, and
    a 405 names them all too (Starlette names only the first route that matched the path)."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi

    def methods_of(self, scope: Scope) -> set[str]:
        """Every method the routes of this path take (none: no such path), asked of the router's
        own matching, method by method."""
        return {
            method
            for method in _METHODS
            if any(
                route.matches({**scope, "method": method})[0] is Match.FULL
                for route in self.fastapi.router.routes
                if not isinstance(route, Mount)  # static files answer for themselves
            )
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            methods = self.methods_of(scope)
            if methods:
                allow = ", ".join(sorted(methods | {"OPTIONS"}))
                await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: dict[str, Any]) -> None:
            methods = (
                self.methods_of(scope)
                if message["type"] == "http.response.start" and message["status"] == 405
                else None
            )
            if methods:
                allow = ", ".join(sorted(methods | {"OPTIONS"}))
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_allow)


class CountRequests:
    """ASGI middleware: every HTTP request counted by method, route (its template, so that ids
    do not make new series) and status, and timed (``vigil_http_*`` in vigil.metrics)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = {"status": 500}  # what an app that raised answers

        async def send_counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = _template(scope)
            HTTP_REQUESTS.labels(
                method=scope["method"], route=route, status=str(answered["status"])
            ).inc()
            HTTP_LATENCY.labels(route=route).observe(time.perf_counter() - started)


def _template(scope: Scope) -> str:
    """The route template that took the request (``/api/v1/assets/{device_id}``).

    An included router's route knows only its own part of the path: the prefix is what comes
    before the part its pattern matches."""
    path: str = scope["path"]
    route = scope.get("route")
    pattern = getattr(route, "path_regex", None)
    template = getattr(route, "path", None)
    if pattern is None or template is None:
        return _unrouted(path)
    for cut, char in enumerate(path):
        if char == "/" and pattern.match(path[cut:]):
            return path[:cut] + template
    return template


def _unrouted(path: str) -> str:
    """A series name for a path no route took (static files, 404s): its first segment only."""
    first = path.strip("/").split("/", 1)[0]
    return f"/{first}/*" if first else "/"
