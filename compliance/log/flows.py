"""Compliance log decisions: verification, signing keys, signed checkpoints (rule A1)."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from compliance.log import service
from compliance.log.models import (
    GENESIS_HASH,
    Checkpoint,
    Problem,
    Verification,
    checkpoint_message,
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


def create_checkpoint(
    conn: psycopg.Connection, *, key: Ed25519PrivateKey, at: datetime, force: bool = False
) -> Checkpoint | None:
    """Sign and store the current head; None when the last checkpoint already covers it."""
    with conn.transaction():
        service.lock_checkpoints(conn)
        count, head_hash = service.head(conn)
        last = service.latest_checkpoint(conn)
        if not force and last is not None and last.entry_count == count:
            return None
        message = checkpoint_message(entry_count=count, head_hash=head_hash, signed_at=at)
        return service.insert_checkpoint(
            conn,
            entry_count=count,
            head_hash=head_hash,
            signed_at=at,
            public_key=public_key_hex(key),
            signature=key.sign(message).hex(),
        )


def verify(conn: psycopg.Connection, *, public_key: str | None = None) -> Verification:
    """Check the whole chain, then each checkpoint's signature and its match with the chain."""
    rows = service.scan(conn)
    try:
        count, head_hash, problem = service.check_chain(rows)
    finally:
        with contextlib.suppress(Exception):
            rows.close()
    marks = service.checkpoints(conn)
    checkpoint_problems: list[str] = []
    stored = service.hashes_at(conn, seqs=[c.entry_count for c in marks if c.entry_count > 0])
    for mark in marks:
        label = f"checkpoint {mark.id} ({mark.entry_count} entries)"
        if public_key is not None and not signature_valid(mark, public_key=public_key):
            checkpoint_problems.append(f"{label}: signature does not verify")
            continue
        if problem is not None and mark.entry_count >= problem.seq:
            continue  # already reported: the chain breaks before this checkpoint's head
        if mark.entry_count > count:
            checkpoint_problems.append(f"{label}: the log has only {count} entries")
            if problem is None:
                problem = Problem(count + 1, f"missing (signed by checkpoint {mark.id})")
            continue
        expected = stored.get(mark.entry_count, GENESIS_HASH)
        if expected != mark.head_hash:
            checkpoint_problems.append(
                f"{label}: entry {mark.entry_count} hash differs from the signed head; "
                f"entries up to {mark.entry_count} were rewritten"
            )
            if problem is None:
                problem = Problem(mark.entry_count, "differs from the signed checkpoint head")
    return Verification(
        entries=count,
        head_hash=head_hash,
        checkpoints=len(marks),
        problem=problem,
        checkpoint_problems=checkpoint_problems,
    )
