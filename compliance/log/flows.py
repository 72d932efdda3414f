"""Compliance log decisions: verification, signing keys, signed checkpoints (rule A1)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg import sql

from compliance.log import merkle, service
from compliance.log.canonical import key_fingerprint, manifest_message
from compliance.log.models import (
    GENESIS_HASH,
    Checkpoint,
    Problem,
    Verification,
    format_at,
    tree_head_message,
)
from vigil.config import Settings

KEY_FILE_NAME = "compliance-signing-key.pem"


def signing_key_path(settings: Settings) -> Path:
    """Where the Ed25519 signing key lives: configured, or in the data directory."""
    return settings.compliance.signing_key_path or settings.data_dir / KEY_FILE_NAME


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``, generating it (mode 0600) when absent."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Exclusive create: two engines starting at once keep whichever key was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_key(path)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    path.with_suffix(".pub").write_text(public_key_hex(key) + "\n")
    return key


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """Raw public key, hex."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def signature_valid(checkpoint: Checkpoint, *, public_key: str) -> bool:
    """True when the checkpoint's signature verifies under ``public_key`` (raw hex)."""
    if checkpoint.public_key != public_key:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
            bytes.fromhex(checkpoint.signature), checkpoint.message()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


class LogTampered(RuntimeError):
    """The log fails its check: no tree head is signed over it."""


def record_leaves(conn: psycopg.Connection, *, upto: int) -> None:
    """Check the entries not yet in the tree against the chain, then record their leaves; a
    broken link refuses (rule A1: nothing unproven is signed into a tree head)."""
    done = service.leaf_count(conn)
    if done >= upto:
        return
    prev = service.hashes_at(conn, seqs=[done]).get(done, GENESIS_HASH) if done else GENESIS_HASH
    leaves: list[bytes] = []
    rows = service.rows_after(conn, after_seq=done, upto=upto)
    try:
        verified, _, problem = service.check_chain(rows, after_seq=done, prev=prev, leaves=leaves)
    finally:
        with contextlib.suppress(Exception):
            rows.close()
    if problem is not None or verified != upto:
        raise LogTampered(f"compliance log: {problem or 'entries missing'}; no tree head signed")
    service.insert_leaves(conn, first_seq=done + 1, leaves=leaves)


def create_checkpoint(
    conn: psycopg.Connection, *, key: Ed25519PrivateKey, at: datetime, force: bool = False
) -> Checkpoint | None:
    """Sign a tree head over the current log; None when the last checkpoint already covers it."""
    with conn.transaction():
        service.lock_checkpoints(conn)
        count, head_hash = service.head(conn)
        last = service.latest_checkpoint(conn)
        if not force and last is not None and last.entry_count == count and last.version == 2:
            return None
        record_leaves(conn, upto=count)
        frontier = _frontier_from(last, conn=conn)
        for leaf in service.stored_leaves(conn, after=frontier.size, upto=count):
            frontier.append(leaf)
        root = frontier.root().hex()
        message = tree_head_message(
            tree_size=count, root_hash=root, head_hash=head_hash, signed_at=at
        )
        return service.insert_checkpoint(
            conn,
            entry_count=count,
            head_hash=head_hash,
            signed_at=at,
            public_key=public_key_hex(key),
            signature=key.sign(message).hex(),
            root_hash=root,
            frontier=[h.hex() for h in frontier.hashes],
        )


def _frontier_from(last: Checkpoint | None, *, conn: psycopg.Connection) -> merkle.Frontier:
    """Where the next tree head starts: the last head's right edge when it folds up to the root
    that head signed (then only newer entries are hashed), else the whole log from the start."""
    if last is not None and last.version == 2 and last.frontier is not None:
        try:
            frontier = merkle.Frontier(last.entry_count, [bytes.fromhex(h) for h in last.frontier])
        except ValueError:
            frontier = None
        if frontier is not None and frontier.root().hex() == last.root_hash:
            return frontier
    return merkle.Frontier()


def verify(
    conn: psycopg.Connection,
    *,
    public_key: str | None = None,
    progress: Callable[[Iterator[dict[str, Any]]], Iterator[dict[str, Any]]] | None = None,
) -> Verification:
    """Check the whole chain, then each checkpoint: its signature, and the log against it. A
    signed tree head whose recorded leaves still hash to its root names the exact entry edited
    since, even when the chain's hashes were recomputed after the edit. ``progress`` wraps the
    stream of entries (a command's progress bar)."""
    rows = service.scan(conn)
    leaves: list[bytes] = []
    try:
        walked = rows if progress is None else progress(rows)
        count, head_hash, problem = service.check_chain(walked, leaves=leaves)
    finally:
        with contextlib.suppress(Exception):
            rows.close()
    marks = service.checkpoints(conn)
    checkpoint_problems: list[str] = []
    found: list[Problem] = [] if problem is None else [problem]
    stored = service.hashes_at(conn, seqs=[c.entry_count for c in marks if c.entry_count > 0])
    current = merkle.Tree(leaves)
    recorded: merkle.Tree | None = None
    for mark in marks:
        label = f"checkpoint {mark.id} ({mark.entry_count} entries)"
        if public_key is not None and not signature_valid(mark, public_key=public_key):
            checkpoint_problems.append(f"{label}: signature does not verify")
            continue
        if problem is not None and mark.entry_count >= problem.seq:
            continue  # already reported: the chain breaks before this checkpoint's head
        if mark.entry_count > count:
            checkpoint_problems.append(f"{label}: the log has only {count} entries")
            found.append(Problem(count + 1, f"missing (signed by checkpoint {mark.id})"))
            continue
        if mark.version == 2 and mark.root_hash is not None:
            if current.range_hash(0, mark.entry_count).hex() == mark.root_hash:
                continue
            if recorded is None:
                recorded = merkle.Tree(service.stored_leaves(conn, upto=count))
            edited = _edited_entry(current, recorded, size=mark.entry_count, root=mark.root_hash)
            if edited is not None:
                checkpoint_problems.append(
                    f"{label}: entry {edited} was changed after this tree head signed it"
                )
                found.append(Problem(edited, f"changed after tree head {mark.id} signed it"))
            else:
                checkpoint_problems.append(
                    f"{label}: entries up to {mark.entry_count} were rewritten, and their "
                    "recorded leaves with them"
                )
                found.append(Problem(mark.entry_count, "differs from the signed tree head"))
            continue
        expected = stored.get(mark.entry_count, GENESIS_HASH)
        if expected != mark.head_hash:
            checkpoint_problems.append(
                f"{label}: entry {mark.entry_count} hash differs from the signed head; "
                f"entries up to {mark.entry_count} were rewritten"
            )
            found.append(Problem(mark.entry_count, "differs from the signed checkpoint head"))
    return Verification(
        entries=count,
        head_hash=head_hash,
        checkpoints=len(marks),
        problem=min(found, key=lambda p: p.seq) if found else None,
        checkpoint_problems=checkpoint_problems,
    )


def _edited_entry(
    current: merkle.Tree, recorded: merkle.Tree, *, size: int, root: str
) -> int | None:
    """The first entry whose content no longer matches its leaf, when the recorded leaves are
    the ones the signed ``root`` covers (they hash up to it); None when they are not."""
    if recorded.size < size or recorded.range_hash(0, size).hex() != root:
        return None
    for index in range(size):
        if current.leaf(index) != recorded.leaf(index):
            return index + 1
    return None


def export_bundle(
    conn: psycopg.Connection,
    *,
    key: Ed25519PrivateKey,
    scope: dict[str, Any],
    devices: sql.Composable | None,
    device_params: dict[str, Any],
    at: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    sign_head: bool = True,
    progress: Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A self-contained bundle of a scope's entries for a regulator (rule A1): each entry with
    its inclusion proof in the latest signed tree head, every tree head this key signed with a
    consistency proof between each two, and a signed manifest of the scope's entries. Verified
    offline by ``compliance.log.bundle``."""
    if sign_head:
        create_checkpoint(conn, key=key, at=at)
    public_key = public_key_hex(key)
    heads: list[Checkpoint] = []
    for mark in service.checkpoints(conn):
        if mark.version == 2 and mark.public_key == public_key and mark.entry_count > 0:
            if not heads or mark.entry_count > heads[-1].entry_count:
                heads.append(mark)
    if not heads:
        raise LogTampered("no signed tree head yet: sign one with `vigil audit checkpoint`")
    size = heads[-1].entry_count
    tree = merkle.Tree(service.stored_leaves(conn, upto=size))
    if tree.size != size or tree.root().hex() != heads[-1].root_hash:
        raise LogTampered("the recorded leaves do not match the latest signed tree head")
    rows = service.scoped_rows(
        conn, devices=devices, device_params=device_params, upto=size, since=since, until=until
    )
    manifest: dict[str, Any] = {
        "scope": scope,
        "tree_size": size,
        "seqs": [row["seq"] for row in rows],
        "exported_at": format_at(at),
    }
    manifest["signature"] = key.sign(manifest_message(manifest)).hex()
    return {
        "format": "vigil.compliance.bundle.v1",
        "public_key": public_key,
        "public_key_fingerprint": key_fingerprint(public_key),
        "tree_heads": [
            {
                "tree_size": h.entry_count,
                "root_hash": h.root_hash,
                "head_hash": h.head_hash,
                "signed_at": format_at(h.signed_at),
                "signature": h.signature,
            }
            for h in heads
        ],
        "consistency": [
            {
                "old_size": old.entry_count,
                "new_size": new.entry_count,
                "proof": [
                    p.hex() for p in tree.consistency_proof(old.entry_count, new.entry_count)
                ],
            }
            for old, new in itertools.pairwise(heads)
        ],
        "entries": [
            {
                "seq": row["seq"],
                "kind": row["kind"],
                "subject_type": row["subject_type"],
                "subject_id": row["subject_id"],
                "body": row["body"],
                "actor": row["actor"],
                "at": format_at(row["at"]),
                "prev_hash": row["prev_hash"],
                "hash": row["hash"],
                "proof": [p.hex() for p in tree.inclusion_proof(row["seq"] - 1, size)],
            }
            for row in (rows if progress is None else progress(rows))
        ],
        "manifest": manifest,
    }
