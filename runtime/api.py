"""The API process's composition root: the FastAPI application (REST under ``/api/v1``, the live
stream, the console at ``/``) assembled from ``api``'s plumbing and every domain's router.

``create_app()`` builds it for a database and a clock; ``serve()`` runs it in the caller's event
loop (the demo and tests), ``vigil api`` runs it under uvicorn with N workers, each worker
building its app with ``app_from_environment()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi_offline
import psycopg
import uvicorn
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from alerts import service as alerts_service
from api import STATIC_DIR
from api.deps import ApiContext
from api.http import AllowedMethods, CountRequests, document_errors
from api.live.service import Broadcaster, DomainReads
from fleet import service as fleet_service
from vigil.catalog import catalog_names
from vigil.clock import AcceleratedClock, Clock, FakeClock, RealClock, make_clock
from vigil.config import load_settings
from vigil.db.pool import open_async_pool, open_pool
from vigil.db.timescale import STALLED_JOBS_SQL
from vigil.metrics import exposition

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# Swagger UI's own files (the fastapi-offline package carries them): /docs works offline
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"

TAGS = [
    {"name": "auth", "description": "Log in, sessions, users and API keys."},
    {
        "name": "assets",
        "description": "Assets in the caller's scope (rule A2), live state, "
        "events and bucketed telemetry.",
    },
    {"name": "live", "description": "Server-sent events fed by PostgreSQL LISTEN/NOTIFY."},
    {"name": "alarms", "description": "Alarms: list, acknowledge, clear."},
    {"name": "incidents", "description": "Entrapment rescue incidents (rules R1-R6)."},
    {
        "name": "maintenance",
        "description": "Maintenance records, verdicts (M3), sign-off (M4), "
        "due and overdue lists, lockout overrides (M6).",
    },
    {"name": "reports", "description": "KPI reports (R7, A4) as JSON and CSV."},
    {
        "name": "audit",
        "description": "Regulator audit: the compliance log (A1), exports, chain "
        "verification and checkpoints.",
    },
    {
        "name": "work orders",
        "description": "Work orders with service-level deadlines (rules S1-S6), callbacks.",
    },
    {"name": "system", "description": "Health."},
]


class ClockOut(BaseModel):
    """The platform clock: deadlines count down on it (it may run accelerated in the demo)."""

    now: datetime
    rate: float = Field(description="platform seconds per real second (0: stopped, in tests)")


def clock_rate(clock: Clock) -> float:
    """How fast ``clock`` runs against real time."""
    if isinstance(clock, FakeClock):
        return 0.0
    if isinstance(clock, AcceleratedClock):
        return clock.factor
    return 1.0


class Health(BaseModel):
    """Liveness of this worker."""

    status: str
    database: bool
    listening: bool
    streams: int
    # TimescaleDB policy jobs its scheduler fails or does not run (ingest runs them itself)
    storage_jobs_stalled: list[str] = []


# what the live stream reads of devices and alarms (rule A2: each subscriber its own scope)
LIVE_READS = DomainReads(
    assets=fleet_service.get_assets,
    visible_devices=fleet_service.visible_device_ids,
    visible_alarms=alerts_service.visible_alarm_ids,
)

# Routers over other domains join when their domain package is present.
OPTIONAL_ROUTERS = {
    "alarms": "alerts.views",
    "audit": "compliance.log.views",
    "condition_policies": "compliance.conditions.views",
    "fleet": "fleet.views",
    "incidents": "compliance.rescue.views",
    "inspections": "compliance.inspections.views",
    "maintenance": "compliance.maintenance.views",
    "reports": "reports.views",
    "work_orders": "workorders.views",
}


def _optional_routers() -> dict[str, APIRouter]:
    found: dict[str, APIRouter] = {}
    for feature, module_name in OPTIONAL_ROUTERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # only the domain's own package being absent is a reason to serve without it; a
            # dependency missing inside it (or any other error) fails the start loudly
            missing = exc.name or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                log.warning("API without %s: %s is not installed", feature, missing)
                continue
            raise
        found[feature] = module.router
    return found


def _routers() -> list[APIRouter]:
    from api.auth.views import router as auth
    from api.live.views import router as live

    return [auth, live]


def create_app(
    *,
    database_url: str,
    clock: Clock | None = None,
    session_ttl: timedelta = timedelta(hours=12),
    pool_size: int = 10,
    sync_pool_size: int = 4,
    console: bool = True,
    heartbeat_s: float = 15.0,
) -> FastAPI:
    """The API for ``database_url`` on ``clock`` (real time by default)."""
    ctx = ApiContext(
        database_url=database_url,
        clock=clock or RealClock(),
        session_ttl=session_ttl,
        heartbeat_s=heartbeat_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # requests read through autocommit connections; writes are single statements or go
        # through the domains' own transactions on the synchronous pool
        ctx.pool = await open_async_pool(database_url, max_size=pool_size, autocommit=True)
        ctx.sync_pool = await asyncio.to_thread(
            open_pool, database_url, min_size=1, max_size=sync_pool_size
        )
        ctx.broadcaster = Broadcaster(
            database_url=database_url, pool=ctx.pool, reads=LIVE_READS, clock=ctx.clock
        )
        try:
            await ctx.broadcaster.start()
            yield
        finally:
            await ctx.broadcaster.close()
            await asyncio.to_thread(ctx.sync_pool.close)
            await ctx.pool.close()

    app = FastAPI(
        title="Vigil API",
        version="1",
        summary="Equipment monitoring and maintenance compliance: fleet, rescue, audit.",
        description=(
            "Authenticate with `POST /api/v1/auth/login` (then `Authorization: Bearer <token>`) "
            "or with an API key (`X-API-Key`). Every query is scoped to the caller (rule A2): "
            "anything outside it answers 404, exactly as if it did not exist. Regulators read "
            "and never write (403 on writes)."
        ),
        openapi_tags=TAGS,
        lifespan=lifespan,
        # the docs are served with Vigil's own copy of Swagger UI: they work without internet
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    for router in _routers():
        app.include_router(router, prefix=API_PREFIX)
    optional = _optional_routers()
    for router in optional.values():
        app.include_router(router, prefix=API_PREFIX)
    features = {feature: feature in optional for feature in OPTIONAL_ROUTERS}

    @app.get(f"{API_PREFIX}/clock", response_model=ClockOut, tags=["system"], summary="Clock")
    async def platform_clock() -> ClockOut:
        """The platform's time and rate, for live countdowns in the console."""
        return ClockOut(now=ctx.clock.now(), rate=clock_rate(ctx.clock))

    @app.get(
        f"{API_PREFIX}/features",
        response_model=dict[str, bool],
        tags=["system"],
        summary="Which optional domains this API serves",
    )
    async def list_features() -> dict[str, bool]:
        """Incidents, maintenance and reports join as their domain packages are installed."""
        return features

    @app.get(
        f"{API_PREFIX}/catalog",
        response_model=dict[str, Any],
        tags=["system"],
        summary="Names of codes, device kinds and metrics in zh-CN and en",
    )
    async def names() -> dict[str, Any]:
        """GB/T 24476 service modes and fault codes, door states, TALQ lamp states and the
        other coded values, with their names in both languages: a code is never shown bare."""
        return catalog_names()

    @app.get(f"{API_PREFIX}/health", response_model=Health, tags=["system"], summary="Health")
    async def health() -> Health:
        """Whether this worker reaches the database and listens for notifications."""
        assert ctx.pool is not None
        stalled: list[str] = []
        try:
            async with ctx.pool.connection(timeout=2) as conn:
                cur = await conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS ts"
                )
                row = await cur.fetchone()
                if row and row["ts"]:
                    cur = await conn.execute(STALLED_JOBS_SQL, {"hypertable": "telemetry_rows"})
                    stalled = [f"{r['proc_name']}: {r['problem']}" for r in await cur.fetchall()]
            database = True
        except Exception:
            database = False
        return Health(
            status="ok" if database else "degraded",
            database=database,
            listening=ctx.broadcaster.listening.is_set(),
            streams=ctx.broadcaster.subscribers,
            storage_jobs_stalled=stalled,
        )

    # for an orchestrator: alive (the process answers) and ready (it can serve: the database
    # answers and the live stream listens); not API resources, so outside /api/v1 and the schema
    @app.get("/healthz", include_in_schema=False)
    async def alive() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def ready() -> JSONResponse:
        assert ctx.pool is not None
        problems: list[str] = []
        try:
            async with ctx.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            problems.append(f"database: {type(exc).__name__}")
        if not ctx.broadcaster.listening.is_set():
            problems.append("live stream: not listening")
        return JSONResponse(
            {"ready": not problems, "problems": problems},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE if problems else status.HTTP_200_OK,
        )

    # for Prometheus: this worker's figures (every worker's, added up, under --workers N);
    # counts only, no fleet data, so it is served without a login like /healthz
    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        text = await asyncio.to_thread(exposition)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # the database went away (restart, network): the request may be retried
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "database unavailable, retry shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # a value the database cannot take (out of range, bad text): the caller's mistake
        return JSONResponse(
            {"detail": f"invalid value: {exc.diag.message_primary or exc}"},
            status_code=status.HTTP_400_BAD_REQUEST,
        )

    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Vigil API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/favicon.svg",
        )

    @app.get("/favicon.svg", include_in_schema=False)
    async def favicon_svg() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> RedirectResponse:
        return RedirectResponse("/favicon.svg", status_code=status.HTTP_301_MOVED_PERMANENTLY)

    if console:
        app.mount("/console", StaticFiles(directory=STATIC_DIR, html=True), name="console")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/console/")

    document_errors(app)
    app.add_middleware(AllowedMethods, fastapi=app)
    app.add_middleware(CountRequests)
    return app


async def serve(
    *,
    database_url: str,
    clock: Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    started: Callable[[str], None] | None = None,
    **app_options: object,
) -> None:
    """Run the API in the current event loop until cancelled.

    The socket is bound and listening before ``started(url)`` is called (port 0 picks a free
    one); requests made before the app finished starting wait in the backlog.
    """
    app = create_app(database_url=database_url, clock=clock, **app_options)  # type: ignore[arg-type]
    sock = socket.create_server((host, port), backlog=512)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if started is not None:
            started(f"http://{host}:{bound}")
        await asyncio.shield(task)
    finally:
        broadcaster = app.state.ctx.broadcaster
        if broadcaster is not None:
            broadcaster.end_streams()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker, configured from ``VIGIL_*`` like every process."""
    settings = load_settings()
    if not settings.database_url:
        raise SystemExit("vigil api: set VIGIL_DATABASE_URL for worker processes")
    clock = make_clock(
        kind=settings.clock.kind, factor=settings.clock.factor, start=settings.clock.start
    )
    return create_app(database_url=settings.database_url, clock=clock)
