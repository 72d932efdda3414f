"""Fixtures of the API tests: a small two-firm fleet with a user per role, and a running API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth.security import hash_password
from fleet.factory import FleetFactory
from runtime.api import create_app, serve
from vigil.clock import FakeClock
from vigil.testing import create_database, drop_database

PASSWORD = "correct horse battery"
# seeded users carry a cheap scrypt cost (it travels in the hash) so that logins stay fast here
_HASH = hash_password(PASSWORD, cost=2**10)


@dataclass
class Fleet:
    """Ids of the seeded parties and devices."""

    ids: dict[str, int] = field(default_factory=dict)
    firm_a_devices: tuple[str, ...] = ("a-el-1", "a-el-2", "a-em-1")
    firm_b_devices: tuple[str, ...] = ("b-el-1",)


def seed_fleet(url: str) -> Fleet:
    """Two jurisdictions, two user units, firms A and B, devices, and one user per role.

    Firm A maintains a-el-1, a-el-2 and a-em-1 at site S1 (jurisdiction J1, user unit U1);
    firm B maintains b-el-1 at S2 (J2, U2). Technician ta1 (firm A) is assigned to a-el-1 only.
    Manufacturer M1 built a-el-1 and a-el-2; M2 built b-el-1.
    """
    fleet = Fleet()
    ids = fleet.ids
    with psycopg.connect(url, autocommit=True) as conn:
        make = FleetFactory(conn, at=FakeClock().now())

        def one(query: str, params: tuple) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        ids["j1"] = make.jurisdiction("J1", name="J one")
        ids["j2"] = make.jurisdiction("J2", name="J two")
        ids["u1"] = make.user_unit("Unit one")
        ids["u2"] = make.user_unit("Unit two")
        for site, unit, jur in (("s1", "u1", "j1"), ("s2", "u2", "j2")):
            ids[site] = make.site(
                code=site, user_unit=ids[unit], jurisdiction=ids[jur], name=f"Site {site}",
                latitude=31.2, longitude=121.4,
            )  # fmt: skip
        for firm in ("a", "b"):
            ids[f"firm_{firm}"] = make.firm(
                f"Firm {firm.upper()}",
                licence_no=f"LIC-{firm}",
                licence_expires_on=date(2030, 1, 1),
            )
        ids["m1"] = make.manufacturer("Maker one")
        ids["m2"] = make.manufacturer("Maker two")
        devices = (
            ("a-el-1", "elevator", "s1", "firm_a", "m1"),
            ("a-el-2", "elevator", "s1", "firm_a", "m1"),
            ("a-em-1", "energy_meter", "s1", "firm_a", None),
            ("b-el-1", "elevator", "s2", "firm_b", "m2"),
        )
        for device, kind, site, firm, maker in devices:
            make.device(
                device, kind=kind, model="model-x", site=ids[site], firm=ids[firm],
                manufacturer=ids[maker] if maker else None,
            )  # fmt: skip
        ids["ta1"] = make.technician(
            firm=ids["firm_a"], name="Tech A1", certificate_no="CERT-A1",
            certificate_expires_on=date(2030, 1, 1),
        )  # fmt: skip
        make.assign(technician=ids["ta1"], device="a-el-1")
        users = (
            ("admin", "admin", {}),
            ("disp_a", "dispatcher", {"firm_id": ids["firm_a"]}),
            ("mgr_a", "firm_manager", {"firm_id": ids["firm_a"]}),
            ("disp_b", "dispatcher", {"firm_id": ids["firm_b"]}),
            ("tech_a", "technician", {"firm_id": ids["firm_a"], "technician_id": ids["ta1"]}),
            ("safety_u1", "safety_manager", {"user_unit_id": ids["u1"]}),
            ("maker_m1", "manufacturer", {"manufacturer_id": ids["m1"]}),
            ("reg_j1", "regulator", {"jurisdiction_id": ids["j1"]}),
            ("reg_j2", "regulator", {"jurisdiction_id": ids["j2"]}),
        )
        for username, role, scope in users:
            columns = ", ".join(["username", "password_hash", "role", *scope])
            marks = ", ".join(["%s"] * (3 + len(scope)))
            ids[username] = one(
                f"INSERT INTO users ({columns}) VALUES ({marks}) RETURNING id",
                (username, _HASH, role, *scope.values()),
            )
    return fleet


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    """The seeded fleet in the test's database."""
    return seed_fleet(db_url)


@pytest.fixture(scope="module")
def shared_client(postgres_admin_url: str, template_database: str) -> Iterator[TestClient]:
    """One seeded database and app for a module's tests that change nothing they read."""
    url = create_database(postgres_admin_url, template_database)
    try:
        seed_fleet(url)
        with TestClient(create_app(database_url=url, clock=FakeClock())) as test_client:
            yield test_client
    finally:
        drop_database(postgres_admin_url, url)


@pytest.fixture
def client(db_url: str, fleet: Fleet, clock: FakeClock) -> Iterator[TestClient]:
    """The API on the test's database and fake clock (lifespan run: pool and listener up)."""
    with TestClient(create_app(database_url=db_url, clock=clock)) as test_client:
        yield test_client


def login(client: TestClient | httpx.Client, username: str) -> dict[str, str]:
    """Authorization headers of a fresh session for ``username``."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


class RunningApi:
    """The API served by uvicorn on a free port, in a thread with its own event loop."""

    def __init__(self, *, database_url: str, clock: FakeClock, heartbeat_s: float = 15.0) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_s = heartbeat_s
        self._thread = threading.Thread(
            target=self._run, args=(database_url, clock), name="api-server", daemon=True
        )

    def _run(self, database_url: str, clock: FakeClock) -> None:
        def started(url: str) -> None:
            self.url = url
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(
            serve(
                database_url=database_url,
                clock=clock,
                port=0,
                started=started,
                heartbeat_s=self._heartbeat_s,
            )
        )
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def __enter__(self) -> RunningApi:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"API did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(15)


@pytest.fixture
def running_api(db_url: str, fleet: Fleet, clock: FakeClock) -> Iterator[RunningApi]:
    """The API over real HTTP (for the live stream and the browser)."""
    with RunningApi(database_url=db_url, clock=clock) as api:
        yield api
