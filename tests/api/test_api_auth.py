"""Login, sessions, API keys and users."""

from __future__ import annotations

from datetime import timedelta

from tests.api.conftest import PASSWORD, login


def test_login_returns_a_token_that_identifies_the_user(shared_client):
    client = shared_client
    headers = login(client, "disp_a")
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["username"] == "disp_a"
    assert me.json()["role"] == "dispatcher"


def test_wrong_password_and_unknown_user_get_the_same_401(shared_client):
    client = shared_client
    wrong = client.post("/api/v1/auth/login", json={"username": "disp_a", "password": "nope"})
    unknown = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong username or password"}


def test_requests_without_or_with_bad_credentials_get_401(shared_client):
    client = shared_client
    assert client.get("/api/v1/assets").status_code == 401
    bad = client.get("/api/v1/assets", headers={"Authorization": "Bearer vs_forged"})
    assert bad.status_code == 401
    assert "invalid" in bad.json()["detail"]
    assert client.get("/api/v1/assets", headers={"X-API-Key": "vk_nonsense"}).status_code == 401


def test_a_session_expires_on_the_clock(client, clock):
    headers = login(client, "disp_a")
    clock.advance(timedelta(hours=11, minutes=59))
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    clock.advance(timedelta(minutes=2))
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_logout_revokes_the_token(client):
    headers = login(client, "disp_a")
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_api_key_acts_with_its_owners_scope_until_revoked(client, db):
    headers = login(client, "disp_a")
    created = client.post("/api/v1/api-keys", headers=headers, json={"name": "erp"})
    assert created.status_code == 201
    key = created.json()["key"]
    stored = db.execute("SELECT prefix, secret_hash FROM api_keys").fetchone()
    assert key.startswith(f"vk_{stored['prefix']}_")
    assert key.split("_", 2)[2] not in stored["secret_hash"]  # only a hash is kept

    by_key = {"X-API-Key": key}
    assets = client.get("/api/v1/assets", headers=by_key)
    assert assets.status_code == 200
    assert {a["id"] for a in assets.json()["items"]} == {"a-el-1", "a-el-2", "a-em-1"}

    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert client.get("/api/v1/assets", headers={"X-API-Key": forged}).status_code == 401

    key_id = created.json()["id"]
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=headers).status_code == 204
    assert client.get("/api/v1/assets", headers=by_key).status_code == 401
    # someone else's key id is simply not found
    other = login(client, "disp_b")
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=other).status_code == 404


def test_api_key_with_past_expiry_is_refused(shared_client):
    client = shared_client
    headers = login(client, "disp_a")
    response = client.post(
        "/api/v1/api-keys",
        headers=headers,
        json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 400
    assert "future" in response.json()["detail"]


def test_admin_creates_users_and_the_scope_must_match_the_role(client, fleet):
    admin = login(client, "admin")
    good = client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "disp_a2",
            "password": PASSWORD,
            "role": "dispatcher",
            "firm_id": fleet.ids["firm_a"],
        },
    )
    assert good.status_code == 201, good.text
    assert login(client, "disp_a2")

    # rule A2: a dispatcher carries a firm and nothing else
    bad = client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "disp_x", "password": PASSWORD, "role": "dispatcher"},
    )
    assert bad.status_code == 400
    assert "rule A2" in bad.json()["detail"]
    taken = client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "disp_a2", "password": PASSWORD, "role": "admin"},
    )
    assert taken.status_code == 409


def test_only_admins_manage_users(shared_client):
    client = shared_client
    for username in ("disp_a", "reg_j1", "mgr_a"):
        headers = login(client, username)
        assert client.get("/api/v1/users", headers=headers).status_code == 403
