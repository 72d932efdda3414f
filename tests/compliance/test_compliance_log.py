"""Rule A1: the append-only, hash-chained compliance log, its checkpoints and `vigil audit`."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from compliance.log import flows, merkle, service
from compliance.log.models import GENESIS_HASH, BodyError, canonical_json, entry_bytes, entry_hash
from runtime.cli import main as vigil_main

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def _fill(conn: psycopg.Connection, n: int) -> list:
    return [
        service.append(
            conn,
            kind="maintenance.verdict",
            subject_type="device",
            subject_id=f"lift-{i % 3}",
            body={"verdict": "verified", "minutes": 20.5 + i, "n": i},
            actor="engine",
            at=T0 + timedelta(minutes=i),
        )
        for i in range(n)
    ]


def _superuser_sql(db_url: str, *statements: str) -> None:
    """Run statements as the database superuser with the log's triggers switched off."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


def test_entries_chain_each_hash_to_the_previous_and_verify(db):
    made = _fill(db, 5)
    assert [e.seq for e in made] == [1, 2, 3, 4, 5]
    assert made[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(made):
        assert after.prev_hash == before.hash
    # The hash is the documented canonical form, recomputable from the stored row alone.
    row = db.execute("SELECT * FROM compliance_log WHERE seq = 2").fetchone()
    expected = canonical_json(
        {
            "actor": "engine",
            "at": "2026-01-05T08:01:00.000000Z",
            "body": {"minutes": 21.5, "n": 1, "verdict": "verified"},
            "kind": "maintenance.verdict",
            "prev": made[0].hash,
            "seq": 2,
            "subject_id": "lift-1",
            "subject_type": "device",
        }
    )
    assert row["body"] == '{"minutes":21.5,"n":1,"verdict":"verified"}'
    assert entry_hash(expected.encode()) == row["hash"] == made[1].hash
    result = flows.verify(db)
    assert result.ok and result.entries == 5 and result.head_hash == made[-1].hash


def test_the_database_refuses_update_delete_and_truncate(db):
    _fill(db, 2)
    for statement in (
        "UPDATE compliance_log SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM compliance_log WHERE seq = 2",
        "TRUNCATE compliance_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(statement)
    assert db.execute("SELECT count(*) AS n FROM compliance_log").fetchone()["n"] == 2


def _raw_row(*, seq: int, prev_hash: str, hash: str) -> dict:
    """A log row as written straight to the table, bypassing the append flow."""
    return {
        "seq": seq,
        "kind": "x",
        "subject_type": "device",
        "subject_id": "a",
        "body": "{}",
        "actor": "mallory",
        "at": T0,
        "prev_hash": prev_hash,
        "hash": hash,
    }


def test_a_row_that_does_not_extend_the_head_is_refused(db):
    first = _fill(db, 2)[0]
    forged = _raw_row(seq=2, prev_hash=first.hash, hash="f" * 64)
    with pytest.raises(psycopg.IntegrityError):  # a fork: entry 2 is taken
        db.execute(service._INSERT, forged)
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="does not extend"):
        db.execute(service._INSERT, {**forged, "seq": 3, "prev_hash": "e" * 64})


def test_a_batch_with_a_broken_link_inside_is_refused_whole(db):
    # rule A1: one statement, one check over all its rows (compliance 0213)
    _fill(db, 2)
    seq, head = service.head(db)
    rows = []
    prev = head
    for n in range(5):
        digest = f"{n + 1:x}" * 64
        broken = n == 3  # the fourth does not link
        rows.append(_raw_row(seq=seq + 1 + n, prev_hash="e" * 64 if broken else prev, hash=digest))
        prev = digest
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=f"entry {seq + 4} "):
        with db.transaction():
            service.insert_rows(db, rows=rows)
    assert service.head(db) == (seq, head)  # nothing of the batch stayed
    rows[3]["prev_hash"] = rows[2]["hash"]
    service.insert_rows(db, rows=rows)
    assert service.head(db) == (seq + 5, rows[-1]["hash"])


def test_a_batch_appended_by_copy_extends_the_chain_and_verifies(db):
    # rule A1: a sweep's entries go in as one COPY; the chain is the one appends one by one make
    _fill(db, 3)
    items = [
        {
            "kind": "escalation.transition",
            "subject_type": "device",
            "subject_id": f"lift-{n}",
            "body": {"from": "ok", "to": "due_soon", "text": "tab\there, line\nthere, \\"},
            "actor": "engine",
            "at": T0 + timedelta(hours=1, seconds=n),
        }
        for n in range(50)
    ]
    assert service.append_many(db, items=[]) is None
    head = service.append_many(db, items=items)
    assert head == service.head(db) and head[0] == 53
    stored = service.entries(db, kind="escalation.transition")
    assert [e.subject_id for e in stored] == [f"lift-{n}" for n in range(50)]
    assert stored[0].body["text"] == "tab\there, line\nthere, \\"
    assert flows.verify(db).ok


def test_a_bad_body_is_refused_and_nothing_is_written(db):
    for body in ({"x": float("nan")}, {"x": object()}, {1: "a"}, ["not", "an", "object"]):
        with pytest.raises(BodyError):
            service.append(
                db, kind="k", subject_type="device", subject_id="a", body=body, actor="a", at=T0
            )
    with pytest.raises(BodyError, match="timezone-aware"):
        service.append(
            db,
            kind="k",
            subject_type="device",
            subject_id="a",
            body={},
            actor="a",
            at=datetime(2026, 1, 1),
        )
    assert db.execute("SELECT count(*) AS n FROM compliance_log").fetchone()["n"] == 0


def test_the_fact_and_its_entry_commit_or_roll_back_together(db_url):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(RuntimeError), conn.transaction():
            service.append(
                conn, kind="k", subject_type="device", subject_id="a", body={}, actor="a", at=T0
            )
            raise RuntimeError("the fact failed to save")
        assert service.head(conn) == (0, GENESIS_HASH)
        with conn.transaction():
            service.append(
                conn, kind="k", subject_type="device", subject_id="a", body={}, actor="a", at=T0
            )
        assert service.head(conn)[0] == 1


def test_concurrent_writers_never_fork_the_chain(db_url):
    writers, each = 6, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with psycopg.connect(db_url) as conn:
                barrier.wait()
                for i in range(each):
                    with conn.transaction():
                        conn.execute("SELECT 1")  # the caller's own work, before the append
                        service.append(
                            conn,
                            kind="k",
                            subject_type="writer",
                            subject_id=n,
                            body={"i": i},
                            actor=f"w{n}",
                            at=T0,
                        )
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(db_url) as conn:
        result = flows.verify(conn)
        assert result.ok and result.entries == writers * each
        by_writer = conn.execute(
            "SELECT subject_id, count(*) FROM compliance_log GROUP BY 1"
        ).fetchall()
    assert sorted(by_writer) == [(str(n), each) for n in range(writers)]


@pytest.mark.parametrize(
    ("tamper", "first_bad", "reason"),
    [
        (
            [
                'UPDATE compliance_log SET body = \'{"minutes":99,"n":3,"verdict":"verified"}\' '
                "WHERE seq = 4"
            ],
            4,
            "content does not match its hash",
        ),
        (["UPDATE compliance_log SET actor = 'mallory' WHERE seq = 2"], 2, "does not match"),
        (["UPDATE compliance_log SET at = at + interval '1 day' WHERE seq = 6"], 6, "match"),
        (["DELETE FROM compliance_log WHERE seq = 3"], 3, "missing"),
        (
            # reorder: entries 5 and 6 swap places
            [
                "UPDATE compliance_log SET seq = 1000 WHERE seq = 5",
                "UPDATE compliance_log SET seq = 5 WHERE seq = 6",
                "UPDATE compliance_log SET seq = 6 WHERE seq = 1000",
            ],
            5,
            "previous-hash link broken",
        ),
        (["DELETE FROM compliance_log WHERE seq = 1"], 1, "missing"),
    ],
)
def test_tampering_as_superuser_is_found_and_the_first_bad_entry_named(
    db, db_url, tamper, first_bad, reason
):
    _fill(db, 8)
    assert flows.verify(db).ok
    _superuser_sql(db_url, *tamper)
    result = flows.verify(db)
    assert not result.ok
    assert result.problem is not None
    assert result.problem.seq == first_bad
    assert reason in result.problem.reason


def test_rewriting_the_chain_or_cutting_its_tail_is_caught_by_a_signed_checkpoint(
    db, db_url, tmp_path
):
    key = flows.load_or_create_key(tmp_path / "key.pem")
    public = flows.public_key_hex(key)
    made = _fill(db, 6)
    mark = flows.create_checkpoint(db, key=key, at=T0)
    assert mark is not None and mark.entry_count == 6 and mark.head_hash == made[-1].hash
    assert flows.create_checkpoint(db, key=key, at=T0) is None  # head unchanged: nothing new
    assert flows.verify(db, public_key=public).ok

    # Cut the tail: the chain that remains is consistent, but the checkpoint signed 6 entries.
    _superuser_sql(db_url, "DELETE FROM compliance_log WHERE seq >= 5")
    result = flows.verify(db, public_key=public)
    assert not result.ok and result.problem is not None and result.problem.seq == 5
    assert "missing" in result.problem.reason


def _rewrite_entry_2(db, db_url: str, *, leaves_too: bool) -> None:
    """Mallory edits entry 2 and recomputes every later hash so that the chain itself holds
    (and, with ``leaves_too``, the recorded Merkle leaves as well)."""
    rows = db.execute("SELECT * FROM compliance_log ORDER BY seq").fetchall()
    statements, prev = [], rows[0]["hash"]
    for row in rows[1:]:
        actor = "mallory" if row["seq"] == 2 else row["actor"]
        data = entry_bytes(
            seq=row["seq"],
            prev=prev,
            kind=row["kind"],
            subject_type=row["subject_type"],
            subject_id=row["subject_id"],
            body_text=row["body"],
            actor=actor,
            at=row["at"],
        )
        statements.append(
            f"UPDATE compliance_log SET actor = '{actor}', prev_hash = '{prev}', "
            f"hash = '{entry_hash(data)}' WHERE seq = {row['seq']}"
        )
        if leaves_too:
            statements.append(
                f"UPDATE compliance_log_leaves SET leaf_hash = '{merkle.leaf_hash(data).hex()}' "
                f"WHERE seq = {row['seq']}"
            )
        prev = entry_hash(data)
    _superuser_sql(db_url, *statements)


def test_a_recomputed_chain_does_not_match_the_signed_head(db, db_url, tmp_path):
    key = flows.load_or_create_key(tmp_path / "key.pem")
    _fill(db, 4)
    flows.create_checkpoint(db, key=key, at=T0)
    _rewrite_entry_2(db, db_url, leaves_too=False)
    result = flows.verify(db, public_key=flows.public_key_hex(key))
    assert not result.ok
    # the signed tree head names the edited entry itself, not the last one it covers (4)
    assert result.problem is not None and result.problem.seq == 2
    assert any("entry 2 was changed" in line for line in result.checkpoint_problems)


def test_a_rewrite_of_the_recorded_leaves_too_is_still_caught(db, db_url, tmp_path):
    key = flows.load_or_create_key(tmp_path / "key.pem")
    _fill(db, 4)
    flows.create_checkpoint(db, key=key, at=T0)
    _rewrite_entry_2(db, db_url, leaves_too=True)
    result = flows.verify(db, public_key=flows.public_key_hex(key))
    assert not result.ok
    assert any("recorded leaves with them" in line for line in result.checkpoint_problems)


def test_checkpoint_signatures_verify_only_under_the_signing_key(db, db_url, tmp_path):
    key = flows.load_or_create_key(tmp_path / "a.pem")
    other = flows.load_or_create_key(tmp_path / "b.pem")
    _fill(db, 2)
    mark = flows.create_checkpoint(db, key=key, at=T0)
    assert mark is not None
    assert flows.signature_valid(mark, public_key=flows.public_key_hex(key))
    assert not flows.signature_valid(mark, public_key=flows.public_key_hex(other))
    assert not flows.verify(db, public_key=flows.public_key_hex(other)).ok
    # A forged count under the right key does not verify either.
    _superuser_sql(
        db_url, f"UPDATE compliance_checkpoints SET entry_count = 1 WHERE id = {mark.id}"
    )
    forged = service.latest_checkpoint(db)
    assert forged is not None
    assert not flows.signature_valid(forged, public_key=flows.public_key_hex(key))
    # Checkpoints are append-only too.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM compliance_checkpoints")


def test_the_signing_key_is_generated_once_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "signing.pem"
    first = flows.load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = flows.load_or_create_key(path)
    assert flows.public_key_hex(first) == flows.public_key_hex(again)
    assert path.with_suffix(".pub").read_text().strip() == flows.public_key_hex(first)


def test_vigil_audit_verify_and_checkpoint_commands(db, db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    _fill(db, 3)
    assert vigil_main(["audit", "checkpoint"]) == 0
    assert "3 entries" in capsys.readouterr().out
    assert (tmp_path / flows.KEY_FILE_NAME).exists()
    assert vigil_main(["audit", "verify"]) == 0
    assert "OK, 3 entries" in capsys.readouterr().out
    _superuser_sql(db_url, "UPDATE compliance_log SET subject_id = 'lift-9' WHERE seq = 2")
    assert vigil_main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "first bad entry entry 2: content does not match its hash" in out


def test_entries_are_listed_per_subject_with_their_bodies(db):
    _fill(db, 6)
    listed = service.entries(db, subject_type="device", subject_id="lift-1")
    assert [e.seq for e in listed] == [2, 5]
    assert listed[0].body == {"minutes": 21.5, "n": 1, "verdict": "verified"}
    assert json.loads(db.execute("SELECT body FROM compliance_log WHERE seq=5").fetchone()["body"])


def test_the_head_row_follows_every_append_and_an_upgrade_starts_it_at_the_last_entry(
    empty_db_url,
):
    # compliance 0210: the trigger reads a one-row head instead of the largest seq of the log
    from vigil.db import migrate

    migrate(empty_db_url, up_to=209)  # a log written before the head table, as it was written
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        last = None
        for i in range(3):
            row = service._row(
                head=last,
                kind="maintenance.verdict",
                subject_type="device",
                subject_id="lift-1",
                body={"n": i},
                actor="engine",
                at=T0 + timedelta(minutes=i),
            )
            conn.execute(service._INSERT, row)
            last = row
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT seq, hash FROM compliance_log_head").fetchone() == (
            3,
            last["hash"],
        )
        new = _fill(conn, 2)
        assert [e.seq for e in new] == [4, 5] and new[0].prev_hash == last["hash"]
        assert conn.execute("SELECT seq, hash FROM compliance_log_head").fetchone() == (
            5,
            new[-1].hash,
        )
        assert flows.verify(conn).ok


def test_a_tree_head_extends_the_last_heads_frontier_and_ignores_a_forged_one(db, db_url, tmp_path):
    key = flows.load_or_create_key(tmp_path / "key.pem")
    _fill(db, 5)
    first = flows.create_checkpoint(db, key=key, at=T0)
    assert first.frontier is not None and len(first.frontier) == 2  # 5 = 4 + 1
    _fill(db, 6)
    second = flows.create_checkpoint(db, key=key, at=T0 + timedelta(hours=1))
    leaves = service.stored_leaves(db, upto=11)
    assert second.root_hash == merkle.Tree(leaves).root().hex()
    # a frontier that does not fold up to its signed root is not trusted: the next head starts
    # from the whole log and still signs the right root
    _superuser_sql(
        db_url,
        f'UPDATE compliance_checkpoints SET frontier = \'["{"00" * 32}", "{"11" * 32}", '
        f'"{"22" * 32}"]\' WHERE id = {second.id}',
    )
    _fill(db, 1)
    third = flows.create_checkpoint(db, key=key, at=T0 + timedelta(hours=2))
    assert third.root_hash == merkle.Tree(service.stored_leaves(db, upto=12)).root().hex()
    assert flows.verify(db, public_key=flows.public_key_hex(key)).ok


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"a": 1, "kind": "x", "z": [1, 2, {"b": None}]},
        {"note": 'a "quoted" ,"kind": inside', "名字": "电梯 困人", "at": T0},
        {"nested": {"kind": {"kind": "deep"}}, "n": 1.5, "ok": True},
    ],
)
def test_an_appended_body_spliced_in_hashes_as_its_verification_does(body):
    # rule A1: appends splice their fresh canonical body in (no second serialisation); the
    # verifier parses the stored text and writes it again: both must give the same bytes
    from compliance.log.canonical import canonical_body, entry_bytes

    fields = {
        "seq": 7,
        "prev": "a" * 64,
        "kind": "escalation.transition",
        "subject_type": "device",
        "subject_id": 'lift-"1"',
        "body_text": canonical_body(body),
        "actor": 'engine ,"kind":"x"',
        "at": T0,
    }
    assert entry_bytes(**fields, body_is_canonical=True) == entry_bytes(**fields)
