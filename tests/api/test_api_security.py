"""Login throttling, and API keys that never carry more than their creator's role."""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg
import pytest

from api.auth import flows
from tests.api.conftest import PASSWORD, login

LOGIN = "/api/v1/auth/login"


def attempt(client, username, password="wrong password"):
    return client.post(LOGIN, json={"username": username, "password": password})


def test_failed_logins_lock_the_account_with_growing_delays(client, fleet, clock, caplog):
    caplog.set_level(logging.WARNING, logger="api.auth.views")
    for _ in range(5):
        assert attempt(client, "disp_a").status_code == 401
    # the 6th failure locks the account for 15 s: even the right password waits
    assert attempt(client, "disp_a").status_code == 401
    locked = attempt(client, "disp_a", PASSWORD)
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "15"
    assert "too many failed logins" in locked.json()["detail"]
    assert "login lockout: user:disp_a locked for 15 s" in caplog.text
    # other accounts are not held up by it
    assert attempt(client, "disp_b", PASSWORD).status_code == 200
    # once the lock ends, another failure locks it twice as long
    clock.advance(timedelta(seconds=15))
    assert attempt(client, "disp_a").status_code == 401
    assert attempt(client, "disp_a", PASSWORD).headers["Retry-After"] == "30"
    clock.advance(timedelta(seconds=30))
    # the right password then gets in, and the account starts afresh
    assert attempt(client, "disp_a", PASSWORD).status_code == 200
    for _ in range(5):
        assert attempt(client, "disp_a").status_code == 401
    assert attempt(client, "disp_a", PASSWORD).status_code == 200


def test_one_address_trying_many_accounts_is_locked(client, fleet):
    for n in range(20):
        assert attempt(client, f"nobody{n}").status_code == 401
    assert attempt(client, "nobody-else").status_code == 401  # the 21st locks the address
    assert attempt(client, "admin", PASSWORD).status_code == 429


def test_the_lock_grows_to_its_cap():
    delays = [flows.ACCOUNT.lock_for(n) for n in range(1, 14)]
    assert delays[:5] == [None] * 5
    assert delays[5:8] == [timedelta(seconds=15), timedelta(seconds=30), timedelta(minutes=1)]
    assert delays[-1] == timedelta(minutes=15)


def test_a_regulators_api_key_is_read_only(client, fleet):
    regulator = login(client, "reg_j1")
    created = client.post("/api/v1/api-keys", json={"name": "dashboard"}, headers=regulator)
    assert created.status_code == 201 and created.json()["read_only"] is True
    key = {"X-API-Key": created.json()["key"]}
    assert client.get("/api/v1/assets", headers=key).status_code == 200
    # the one write a regulator's session may make (rule M6's override) is refused to the key
    override = client.post(
        "/api/v1/maintenance/lockouts/a-el-1/override",
        json={"reason": "inspection passed", "until": "2026-02-01T00:00:00Z"},
        headers=key,
    )
    assert override.status_code == 403 and "read-only" in override.text
    # and it cannot mint a key with more than itself
    minted = client.post("/api/v1/api-keys", json={"name": "more"}, headers=key)
    assert minted.status_code == 403


def test_a_read_only_key_of_a_firm_reads_but_never_writes(client, fleet):
    dispatcher = login(client, "disp_a")
    created = client.post(
        "/api/v1/api-keys", json={"name": "wallboard", "read_only": True}, headers=dispatcher
    )
    key = {"X-API-Key": created.json()["key"]}
    assert client.get("/api/v1/work-orders", headers=key).status_code == 200
    opened = client.post(
        "/api/v1/work-orders",
        json={"device_id": "a-el-1", "kind": "fault_repair", "level": 2, "origin": "phone",
              "title": "noise"},
        headers=key,
    )  # fmt: skip
    assert opened.status_code == 403
    listed = client.get("/api/v1/api-keys", headers=dispatcher).json()
    assert [k["read_only"] for k in listed] == [True]


def test_the_database_refuses_a_regulator_key_that_could_write(db, fleet):
    with pytest.raises(psycopg.errors.RaiseException, match="read-only"):
        db.execute(
            "INSERT INTO api_keys (user_id, name, prefix, secret_hash) "
            "VALUES (%s, 'raw', 'abcdefgh', 'x')",
            (fleet.ids["reg_j1"],),
        )


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/work-orders", "GET, OPTIONS, POST"),
        ("/api/v1/work-orders/7", "GET, OPTIONS"),
        ("/api/v1/condition-policies/default", "OPTIONS, PUT"),
    ],
)
def test_options_and_405_name_every_method_of_the_path(client, path, allow):
    # Starlette named only the first route of a path (GET), hiding POST on the same path
    options = client.options(path)
    assert options.status_code == 204 and options.headers["allow"] == allow
    refused = client.request("PATCH", path)
    assert refused.status_code == 405 and refused.headers["allow"] == allow
    assert client.options("/api/v1/no-such-thing").status_code == 404


def test_every_route_documents_the_errors_it_can_answer(client):
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if operation.get("security"):
                assert "401" in codes, (method, path)
                if method != "get":
                    assert "403" in codes, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert {"400", "422"} <= codes, (method, path)
    login = schema["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert "429" in login
