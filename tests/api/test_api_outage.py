"""The API through a database restart: 503 while it is down, the live stream resumes after."""

from __future__ import annotations

import time

import httpx

from tests.api.conftest import RunningApi, login, seed_fleet
from tests.api.test_api_live import SseStream, change_state

OUTAGE_S = 6.0


def test_live_stream_resyncs_and_resumes_after_a_database_restart(private_postgres, clock):
    url = private_postgres.url("vigil")
    seed_fleet(url)
    with RunningApi(database_url=url, clock=clock) as api:
        with httpx.Client(base_url=api.url, timeout=httpx.Timeout(20.0)) as client:
            headers = login(client, "disp_a")
            with client.stream("GET", "/api/v1/stream", headers=headers) as response:
                stream = SseStream(response)
                stream.until("hello")

                assert client.get("/readyz").json() == {"ready": True, "problems": []}
                private_postgres.stop(mode="immediate")
                down = client.get("/api/v1/assets", headers=headers)
                assert down.status_code == 503  # said plainly, not a 500
                assert down.json() == {"detail": "database unavailable, retry shortly"}
                # an orchestrator sees the worker alive but not ready while the database is down
                assert client.get("/healthz").status_code == 200
                not_ready = client.get("/readyz")
                assert not_ready.status_code == 503 and not not_ready.json()["ready"]
                assert any("database" in p for p in not_ready.json()["problems"])
                # An outage longer than the listener's back-off schedule (~4 s): it used to give
                # up after five tries and leave the stream silent. The outage's length is the
                # point here, so this is a deliberate wait, not one for an event.
                time.sleep(OUTAGE_S)
                private_postgres.start()

                # the listener reconnects and tells the client it may have missed something
                assert stream.until("resync")["reason"] == "database reconnected"
                change_state(url, {"a-el-1": {"floor": 9}})
                assert stream.until("state")["asset"]["state"]["floor"]["value"] == 9
            # and requests work again
            assert client.get("/api/v1/assets", headers=headers).json()["total"] == 3
            assert client.get("/readyz").status_code == 200
