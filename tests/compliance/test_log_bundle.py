"""Rule A1, offline: a regulator's bundle of its jurisdiction's entries (with gaps: other
jurisdictions' entries lie between), proven by inclusion in signed tree heads, verified with no
database, and every kind of tampering named."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import sql

from compliance.log import bundle, flows, service
from compliance.log.canonical import entry_bytes, entry_hash, parse_at, tree_head_message
from fleet.factory import FleetFactory
from runtime.cli import main as vigil_main

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.fixture
def world(db, tmp_path):
    """Two jurisdictions' lifts; 12 entries alternating between them, tree heads at 3, 7, 12."""
    make = FleetFactory(db, at=T0)
    for code in ("sh", "bj"):
        site = make.site(jurisdiction=make.jurisdiction(code))
        make.device(f"{code}-lift", site=site)
    key = flows.load_or_create_key(tmp_path / "key.pem")
    for i in range(12):
        service.append(
            db,
            kind="maintenance.verdict",
            subject_type="device",
            subject_id="sh-lift" if i % 3 == 0 else "bj-lift",
            body={"n": i, "verdict": "verified"},
            actor="engine",
            at=T0 + timedelta(minutes=i),
        )
        if i + 1 in (3, 7):
            flows.create_checkpoint(db, key=key, at=T0 + timedelta(minutes=i, seconds=30))
    return key


def export(db, key, *, code="sh"):
    jurisdiction = db.execute("SELECT id FROM jurisdictions WHERE code = %s", (code,)).fetchone()
    return flows.export_bundle(
        db,
        key=key,
        scope={"jurisdiction": code},
        devices=sql.SQL("d.site_id IN (SELECT id FROM sites WHERE jurisdiction_id = %(j)s)"),
        device_params={"j": jurisdiction["id"]},
        at=T0 + timedelta(hours=1),
    )


def test_a_jurisdictions_bundle_verifies_offline_despite_the_gaps(db, world):
    made = export(db, world)
    # entries 1, 4, 7, 10 are Shanghai's; 2-3, 5-6, 8-9, 11-12 Beijing's
    assert [e["seq"] for e in made["entries"]] == [1, 4, 7, 10]
    assert [h["tree_size"] for h in made["tree_heads"]] == [3, 7, 12]
    check = bundle.verify(made, public_key=flows.public_key_hex(world))
    assert check.ok, check.problems
    assert (check.entries, check.tree_heads) == (4, 3)


def resign(made, key):
    """Recompute an edited entry's hash so that only the proof can catch it."""
    entry = made["entries"][1]
    entry["hash"] = entry_hash(
        entry_bytes(
            seq=entry["seq"],
            prev=entry["prev_hash"],
            kind=entry["kind"],
            subject_type=entry["subject_type"],
            subject_id=entry["subject_id"],
            body_text=entry["body"],
            actor=entry["actor"],
            at=parse_at(entry["at"]),
        )
    )


def tamper_edit(made, key):
    made["entries"][1]["actor"] = "mallory"


def tamper_edit_and_rehash(made, key):
    made["entries"][1]["body"] = '{"n":3,"verdict":"no_evidence"}'
    resign(made, key)


def tamper_drop(made, key):
    del made["entries"][1]


def tamper_proof(made, key):
    proof = made["entries"][1]["proof"]
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]


def tamper_resign_head(made, key):
    # a forger's head over rewritten history, signed with the forger's key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    head = made["tree_heads"][-1]
    head["root_hash"] = "ab" * 32
    forged = Ed25519PrivateKey.generate()
    message = tree_head_message(
        tree_size=head["tree_size"],
        root_hash=head["root_hash"],
        head_hash=head["head_hash"],
        signed_at=parse_at(head["signed_at"]),
    )
    head["signature"] = forged.sign(message).hex()


def tamper_reorder_heads(made, key):
    heads = made["tree_heads"]
    heads[0], heads[1] = heads[1], heads[0]


@pytest.mark.parametrize(
    ("tamper", "named", "says"),
    [
        (tamper_edit, 4, "entry 4: content does not match its hash"),
        (tamper_edit_and_rehash, 4, "entry 4: its inclusion proof does not lead"),
        (tamper_drop, 4, "entry 4: in the manifest but missing"),
        (tamper_proof, 4, "entry 4: its inclusion proof does not lead"),
        (tamper_resign_head, None, "tree head of 12 entries: signature does not verify"),
        (tamper_reorder_heads, None, "out of order"),
    ],
)
def test_every_kind_of_tampering_is_named(db, world, tamper, named, says):
    made = export(db, world)
    altered = copy.deepcopy(made)
    tamper(altered, world)
    check = bundle.verify(altered, public_key=flows.public_key_hex(world))
    assert not check.ok
    assert check.first_bad_entry == named
    assert any(says in problem for problem in check.problems), check.problems


def test_a_bundle_from_another_key_is_refused(db, world, tmp_path):
    other = flows.public_key_hex(flows.load_or_create_key(tmp_path / "other.pem"))
    check = bundle.verify(export(db, world), public_key=other)
    assert not check.ok and "another key" in check.problems[0]


def test_export_and_verify_bundle_from_the_command_line(db, db_url, world, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    monkeypatch.setenv("VIGIL_COMPLIANCE__SIGNING_KEY_PATH", str(tmp_path / "key.pem"))
    out = tmp_path / "sh.json"
    assert vigil_main(["audit", "export", "--jurisdiction", "sh", "--out", str(out)]) == 0
    made = json.loads(out.read_text())
    assert [e["seq"] for e in made["entries"]] == [1, 4, 7, 10]
    key = flows.public_key_hex(world)
    # the regulator's side: a fresh interpreter, no database, nothing but the file and the key
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    probe = (
        "import sys, runpy; sys.argv = ['verify-bundle', sys.argv[1], '--public-key', "
        "sys.argv[2]]\n"
        "try:\n    runpy.run_module('compliance.log.bundle', run_name='__main__')\n"
        "finally:\n"
        "    loaded = {m.split('.')[0] for m in sys.modules}\n"
        "    print('loaded:', sorted(loaded & {'psycopg', 'pydantic', 'numpy', 'fastapi'}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(out), key],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK, 4 entries proven in 3 signed tree head(s)" in run.stdout
    assert "loaded: []" in run.stdout  # standard library and cryptography only
    made["entries"][0]["actor"] = "mallory"
    out.write_text(json.dumps(made))
    assert vigil_main(["audit", "verify-bundle", str(out), "--public-key", key]) == 1


def test_a_log_edited_before_its_leaves_were_recorded_is_not_signed(db, db_url, world):
    # the next tree head checks the new entries against the chain before it signs them
    with db.transaction():
        db.execute("ALTER TABLE compliance_log DISABLE TRIGGER USER")
        db.execute("UPDATE compliance_log SET actor = 'mallory' WHERE seq = 9")
        db.execute("ALTER TABLE compliance_log ENABLE TRIGGER USER")
    with pytest.raises(flows.LogTampered, match="entry 9"):
        flows.create_checkpoint(db, key=world, at=T0 + timedelta(hours=2))
