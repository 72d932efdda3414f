"""The live stream: NOTIFY in, each subscriber sees only its scope, on every worker alike."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from tests.api.conftest import RunningApi, login
from vigil import notify


class SseStream:
    """Reads server-sent events from an open streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next_event(self, *, deadline: float | None = None) -> tuple[str, dict]:
        """The next event (name, data); comments and heartbeats are skipped. Past ``deadline``
        (monotonic) it fails at the next line, so a stream kept alive by heartbeats alone fails
        the test instead of holding it to the suite's timeout."""
        name, data = "", ""
        for line in self._lines:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("no such event before the deadline")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                return name, json.loads(data)
        raise EOFError("stream ended")

    def until(self, wanted: str, *, timeout: float = 90.0) -> dict:
        """Data of the next event called ``wanted`` (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            name, data = self.next_event(deadline=deadline)
            if name == wanted:
                return data


@contextmanager
def subscribe(base_url: str, username: str) -> Iterator[SseStream]:
    """An open live stream of ``username``, subscribed (``hello`` received)."""
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(10.0)) as client:
        headers = login(client, username)
        with client.stream("GET", "/api/v1/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = SseStream(response)
            hello = stream.until("hello")
            assert hello["user"] == username
            yield stream


def change_state(url: str, values: dict[str, dict[str, float]]) -> None:
    """Write device_state rows and NOTIFY, in one transaction, as ingest does."""
    with psycopg.connect(url) as conn:
        for device, metrics in values.items():
            for metric, value in metrics.items():
                conn.execute(
                    """INSERT INTO device_state (device_id, metric, value, ts)
                       VALUES (%s, %s, %s, %s) ON CONFLICT (device_id, metric)
                       DO UPDATE SET value = EXCLUDED.value, ts = EXCLUDED.ts""",
                    (device, metric, value, datetime(2026, 1, 5, 7, tzinfo=UTC)),
                )
        notify.send(conn, notify.STATE, notify.state_payloads(values))


def test_each_subscriber_sees_only_its_scope(running_api, db_url):
    with (
        subscribe(running_api.url, "disp_a") as firm_a,
        subscribe(running_api.url, "disp_b") as firm_b,
        subscribe(running_api.url, "tech_a") as tech,
    ):
        change_state(db_url, {"b-el-1": {"floor": 7}, "a-el-2": {"floor": 2}})
        change_state(db_url, {"a-el-1": {"alarm_button": 1}})

        # both commits may arrive in one batch: compare what arrived, not its order
        got = {m["asset"]["id"]: m["asset"] for m in (firm_a.until("state") for _ in range(2))}
        assert set(got) == {"a-el-1", "a-el-2"}
        assert got["a-el-1"]["condition"] == "alarm"

        only_b = firm_b.until("state")
        assert only_b["asset"]["id"] == "b-el-1"
        assert only_b["asset"]["state"]["floor"]["value"] == 7

        # the technician is assigned to a-el-1 only: a-el-2 never reaches it
        assert tech.until("state")["asset"]["id"] == "a-el-1"

        # firm B's next message is its own, a-el-1 was never sent to it
        change_state(db_url, {"b-el-1": {"floor": 8}})
        assert firm_b.until("state")["asset"]["state"]["floor"]["value"] == 8


def test_events_and_alerts_are_scoped_too(running_api, db_url):
    with subscribe(running_api.url, "disp_b") as firm_b:
        with psycopg.connect(db_url) as conn:
            notify.send(
                conn,
                notify.EVENTS,
                [
                    notify.event_payload(
                        notify.EventNotice(1, "a-el-1", "alarm_button", 1, 1.0, 0.0)
                    ),
                    notify.event_payload(
                        notify.EventNotice(2, "b-el-1", "door_state", 2, 2.0, 0.0)
                    ),
                ],
            )
            notify.send(conn, notify.ALERTS, [json.dumps({"kind": "incident", "device": "a-el-1"})])
            notify.send(conn, notify.ALERTS, [json.dumps({"kind": "alarm", "device": "b-el-1"})])
        assert firm_b.until("event")["event"]["device"] == "b-el-1"
        assert firm_b.until("alert")["alert"] == {"kind": "alarm", "device": "b-el-1"}


def test_two_workers_deliver_the_same_notice(running_api, db_url, clock):
    with (
        RunningApi(database_url=db_url, clock=clock) as second_worker,
        subscribe(running_api.url, "reg_j1") as on_first,
        subscribe(second_worker.url, "reg_j1") as on_second,
    ):
        change_state(db_url, {"a-em-1": {"frequency": 50.0}})
        assert on_first.until("state")["asset"]["id"] == "a-em-1"
        assert on_second.until("state")["asset"]["id"] == "a-em-1"


def test_stream_needs_credentials(running_api):
    response = httpx.get(f"{running_api.url}/api/v1/stream", timeout=5)
    assert response.status_code == 401


def test_stream_ends_when_the_session_is_revoked_or_expires(db_url, fleet, clock):
    # the heartbeat never comes (an hour): only the revocation notice or the expiry watch can end
    # the streams, also while events keep flowing (a busy fleet has no idle heartbeat)
    with RunningApi(database_url=db_url, clock=clock, heartbeat_s=3600) as api:
        with httpx.Client(base_url=api.url, timeout=httpx.Timeout(10.0)) as client:
            headers = login(client, "disp_a")
            with client.stream("GET", "/api/v1/stream", headers=headers) as response:
                stream = SseStream(response)
                stream.until("hello")
                change_state(db_url, {"a-el-1": {"floor": 3}})
                assert stream.until("state")["asset"]["id"] == "a-el-1"
                assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
                change_state(db_url, {"a-el-1": {"floor": 4}})
                assert stream.until("logout", timeout=20)["reason"] == "session revoked"
                with pytest.raises(EOFError):
                    stream.next_event()
            # expiry on the platform clock ends it too
            headers = login(client, "disp_a")
            with client.stream("GET", "/api/v1/stream", headers=headers) as response:
                stream = SseStream(response)
                stream.until("hello")
                clock.advance(13 * 3600)
                assert stream.until("logout", timeout=20)["reason"] == "credentials expired"


def test_stream_ends_when_its_api_key_is_revoked_or_its_user_deactivated(db_url, fleet, clock):
    with RunningApi(database_url=db_url, clock=clock, heartbeat_s=3600) as api:
        with httpx.Client(base_url=api.url, timeout=httpx.Timeout(10.0)) as client:
            session = login(client, "disp_a")
            created = client.post("/api/v1/api-keys", json={"name": "wall"}, headers=session)
            assert created.status_code == 201, created.text
            key = {"X-API-Key": created.json()["key"]}
            with client.stream("GET", "/api/v1/stream", headers=key) as response:
                stream = SseStream(response)
                stream.until("hello")
                revoked = client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=session)
                assert revoked.status_code == 204
                assert stream.until("logout", timeout=20)["reason"] == "api_key revoked"
            headers = login(client, "disp_a")
            with client.stream("GET", "/api/v1/stream", headers=headers) as response:
                stream = SseStream(response)
                stream.until("hello")
                with psycopg.connect(db_url, autocommit=True) as conn:
                    conn.execute("UPDATE users SET active = false WHERE username = 'disp_a'")
                assert stream.until("logout", timeout=20)["reason"] == "user revoked"
