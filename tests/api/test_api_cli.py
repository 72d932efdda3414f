"""``vigil api``: user and key set-up, and the server with several worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from runtime.cli import main
from tests.api.conftest import PASSWORD
from vigil.services import free_port, wait_for_port


def test_user_add_key_add_and_two_workers_serving(db_url, fleet, monkeypatch, capsys):
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    monkeypatch.setenv("VIGIL_PASSWORD", PASSWORD)
    firm = str(fleet.ids["firm_a"])
    assert main(["api", "user-add", "ops", "--role", "dispatcher", "--firm-id", firm]) == 0
    assert main(["api", "user-add", "bad", "--role", "regulator"]) == 2
    assert "rule A2" in capsys.readouterr().err
    assert main(["api", "key-add", "ops", "--name", "erp"]) == 0
    api_key = capsys.readouterr().out.strip().splitlines()[-1]
    assert api_key.startswith("vk_")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "api", "--port", str(port), "--workers", "2"],
        env={**os.environ, "VIGIL_DATABASE_URL": db_url, "VIGIL_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            # a session made on one worker is good on the other: several requests, two workers
            token = client.post(
                "/api/v1/auth/login", json={"username": "ops", "password": PASSWORD}
            ).json()["token"]
            for _ in range(6):
                mine = client.get("/api/v1/assets", headers={"Authorization": f"Bearer {token}"})
                assert {a["id"] for a in mine.json()["items"]} == set(fleet.firm_a_devices)
                by_key = client.get("/api/v1/me", headers={"X-API-Key": api_key})
                assert by_key.json()["username"] == "ops"
            assert client.get("/").status_code in (200, 307)
            assert client.get("/console/").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
