"""Regulator audit over the compliance log (rules A1, A2): query, export, verify, checkpoints."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.log.flows import create_checkpoint, public_key_hex
from compliance.log.models import entry_bytes, entry_hash
from compliance.log.service import append
from tests.api.conftest import login

AT = datetime(2026, 1, 5, 7, 30, tzinfo=UTC)


def write_log(url: str) -> None:
    """Four entries: two about firm A's lift (J1), one about firm B's (J2), one about no asset."""
    with psycopg.connect(url) as conn:
        facts = [
            ("escalation.transition", "device", "a-el-1", {"state": "overdue"}),
            ("finding.opened", "firm", "1", {"rule": "M10"}),
            ("escalation.transition", "device", "b-el-1", {"state": "overdue"}),
            ("lockout.override", "override", "7", {"device_id": "a-el-1", "reason": "drill"}),
        ]
        for i, (kind, subject_type, subject_id, body) in enumerate(facts):
            append(
                conn,
                kind=kind,
                subject_type=subject_type,
                subject_id=subject_id,
                body=body,
                actor="engine",
                at=AT + timedelta(minutes=i),
            )
        conn.commit()


def test_regulator_reads_the_log_of_its_jurisdiction(client, db_url):
    write_log(db_url)
    j1 = client.get("/api/v1/audit/log", headers=login(client, "reg_j1")).json()
    assert [(e["seq"], e["device_id"]) for e in j1["items"]] == [(1, "a-el-1"), (4, "a-el-1")]
    j2 = client.get("/api/v1/audit/log", headers=login(client, "reg_j2")).json()
    assert [e["seq"] for e in j2["items"]] == [3]
    admin = client.get("/api/v1/audit/log?limit=2", headers=login(client, "admin")).json()
    assert [e["seq"] for e in admin["items"]] == [1, 2]
    assert admin["next_after_seq"] == 2
    rest = client.get("/api/v1/audit/log?after_seq=2", headers=login(client, "admin")).json()
    assert [e["seq"] for e in rest["items"]] == [3, 4]
    by_kind = client.get(
        "/api/v1/audit/log?kind=lockout.override", headers=login(client, "reg_j1")
    ).json()
    assert [e["body"]["reason"] for e in by_kind["items"]] == ["drill"]


def test_only_auditors_read_the_log(shared_client):
    client = shared_client
    for username in ("disp_a", "mgr_a", "tech_a", "safety_u1", "maker_m1"):
        response = client.get("/api/v1/audit/log", headers=login(client, username))
        assert response.status_code == 403


def test_exports_let_the_regulator_recompute_each_hash(client, db_url):
    write_log(db_url)
    headers = login(client, "reg_j1")
    jsonl = client.get("/api/v1/audit/export?format=jsonl", headers=headers)
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [line["seq"] for line in lines] == [1, 4]

    exported = client.get("/api/v1/audit/export?format=csv", headers=headers)
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["seq"]) for r in rows] == [1, 4]
    for row in rows:
        data = entry_bytes(
            seq=int(row["seq"]),
            prev=row["prev_hash"],
            kind=row["kind"],
            subject_type=row["subject_type"],
            subject_id=row["subject_id"],
            body_text=row["body"],
            actor=row["actor"],
            at=datetime.fromisoformat(row["at"]),
        )
        assert entry_hash(data) == row["hash"]


def test_bad_export_format_is_a_4xx(shared_client):
    client = shared_client
    response = client.get("/api/v1/audit/export?format=xml", headers=login(client, "admin"))
    assert response.status_code == 422
    assert "jsonl" in str(response.json()["detail"])


def test_verify_finds_an_edited_entry_and_checkpoints_verify(client, db_url, db):
    write_log(db_url)
    key = Ed25519PrivateKey.generate()
    with psycopg.connect(db_url) as conn:
        create_checkpoint(conn, key=key, at=AT + timedelta(hours=1))
    headers = login(client, "reg_j2")
    public_key = public_key_hex(key)
    good = client.get(f"/api/v1/audit/verify?public_key={public_key}", headers=headers).json()
    assert good["ok"] is True and good["entries"] == 4 and good["checkpoints"] == 1
    assert good["signatures_checked"] is True

    marks = client.get(f"/api/v1/audit/checkpoints?public_key={public_key}", headers=headers)
    assert [(m["entry_count"], m["signature_valid"]) for m in marks.json()] == [(4, True)]
    other_key = public_key_hex(Ed25519PrivateKey.generate())
    marks = client.get(f"/api/v1/audit/checkpoints?public_key={other_key}", headers=headers)
    assert [m["signature_valid"] for m in marks.json()] == [False]

    # a superuser edits entry 3 behind the triggers' back
    db.execute("ALTER TABLE compliance_log DISABLE TRIGGER compliance_log_no_update")
    db.execute("""UPDATE compliance_log SET body = '{"state":"ok"}' WHERE seq = 3""")
    bad = client.get("/api/v1/audit/verify", headers=headers).json()
    assert bad["ok"] is False
    assert bad["first_bad_entry"] == 3
    assert "does not match its hash" in bad["problem"]
