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

from api.app import create_app, serve
from api.auth.security import hash_password
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

        def one(query: str, params: tuple) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        ids["j1"] = one(
            "INSERT INTO jurisdictions (code, name) VALUES ('J1','J one') RETURNING id", ()
        )
        ids["j2"] = one(
            "INSERT INTO jurisdictions (code, name) VALUES ('J2','J two') RETURNING id", ()
        )
        ids["u1"] = one("INSERT INTO user_units (name) VALUES ('Unit one') RETURNING id", ())
        ids["u2"] = one("INSERT INTO user_units (name) VALUES ('Unit two') RETURNING id", ())
        for site, unit, jur in (("s1", "u1", "j1"), ("s2", "u2", "j2")):
            ids[site] = one(
                """INSERT INTO sites (user_unit_id, jurisdiction_id, name, latitude, longitude,
                   tier) VALUES (%s, %s, %s, 31.2, 121.4, 'city') RETURNING id""",
                (ids[unit], ids[jur], f"Site {site}"),
            )
        for firm in ("a", "b"):
            ids[f"firm_{firm}"] = one(
                """INSERT INTO maintenance_firms (name, licence_no, licence_expires_on)
                   VALUES (%s, %s, %s) RETURNING id""",
                (f"Firm {firm.upper()}", f"LIC-{firm}", date(2030, 1, 1)),
            )
        ids["m1"] = one("INSERT INTO manufacturers (name) VALUES ('Maker one') RETURNING id", ())
        ids["m2"] = one("INSERT INTO manufacturers (name) VALUES ('Maker two') RETURNING id", ())
        devices = (
            ("a-el-1", "elevator", "s1", "firm_a", "m1"),
            ("a-el-2", "elevator", "s1", "firm_a", "m1"),
            ("a-em-1", "energy_meter", "s1", "firm_a", None),
            ("b-el-1", "elevator", "s2", "firm_b", "m2"),
        )
        for device, kind, site, firm, maker in devices:
            conn.execute(
                """INSERT INTO devices (id, kind, model, site_id, firm_id, manufacturer_id)
                   VALUES (%s, %s, 'model-x', %s, %s, %s)""",
                (device, kind, ids[site], ids[firm], ids[maker] if maker else None),
            )
        ids["ta1"] = one(
            """INSERT INTO technicians (firm_id, name, certificate_no, certificate_expires_on)
               VALUES (%s, 'Tech A1', 'CERT-A1', '2030-01-01') RETURNING id""",
            (ids["firm_a"],),
        )
        conn.execute(
            "INSERT INTO technician_assignments (technician_id, device_id) VALUES (%s, 'a-el-1')",
            (ids["ta1"],),
        )
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
