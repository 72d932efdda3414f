"""Verify an exported compliance-log bundle offline (rule A1): no database, no network; the
standard library and ``cryptography`` only, so a regulator can run it anywhere:

    python -m compliance.log.bundle FILE --public-key HEX      (or: vigil audit verify-bundle)

A bundle (``vigil audit export``) holds a scope's entries (a jurisdiction, a firm, a period),
each with an inclusion proof in the log's Merkle tree; the signed tree heads, oldest first, with
a consistency proof between each two; and a signed manifest naming every entry of the scope. The
check names the first entry whose content, proof or signature fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from compliance.log import merkle
from compliance.log.canonical import (
    entry_bytes,
    entry_hash,
    key_fingerprint,
    manifest_message,
    parse_at,
    tree_head_message,
)

FORMAT = "vigil.compliance.bundle.v1"


@dataclass
class BundleCheck:
    """What verifying a bundle found."""

    entries: int = 0
    tree_heads: int = 0
    first_bad_entry: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every signature, proof and entry holds."""
        return not self.problems

    def fail(self, text: str, *, seq: int | None = None) -> None:
        """Record a problem (about entry ``seq``, when it is one)."""
        self.problems.append(text)
        if seq is not None and (self.first_bad_entry is None or seq < self.first_bad_entry):
            self.first_bad_entry = seq


def _signed(public_key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def verify(bundle: dict[str, Any], *, public_key: str) -> BundleCheck:
    """Check a bundle against the regulator's trusted public key (raw Ed25519, hex)."""
    check = BundleCheck()
    if bundle.get("format") != FORMAT:
        check.fail(f"not a {FORMAT} bundle")
        return check
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    except ValueError:
        check.fail("the trusted public key is not a raw Ed25519 key in hex")
        return check
    if bundle.get("public_key_fingerprint") != key_fingerprint(public_key):
        check.fail("the bundle was signed with another key than the trusted one")
    try:
        roots = _check_heads(bundle, key, check)
        _check_entries(bundle, key, roots, check)
    except (KeyError, TypeError, ValueError) as exc:
        check.fail(f"malformed bundle: {exc!r}")
    return check


def _check_heads(bundle: dict[str, Any], key: Ed25519PublicKey, check: BundleCheck) -> dict:
    """Signatures, order and consistency of the tree heads; the roots that hold, by size."""
    heads = bundle["tree_heads"]
    check.tree_heads = len(heads)
    roots: dict[int, bytes] = {}
    previous: dict[str, Any] | None = None
    proofs = {(p["old_size"], p["new_size"]): p["proof"] for p in bundle["consistency"]}
    for head in heads:
        size, label = head["tree_size"], f"tree head of {head['tree_size']} entries"
        message = tree_head_message(
            tree_size=size,
            root_hash=head["root_hash"],
            head_hash=head["head_hash"],
            signed_at=parse_at(head["signed_at"]),
        )
        if not _signed(key, head["signature"], message):
            check.fail(f"{label}: signature does not verify under the trusted key")
            continue
        if previous is not None:
            if size <= previous["tree_size"] or head["signed_at"] < previous["signed_at"]:
                check.fail(f"{label}: tree heads out of order (after {previous['tree_size']})")
                continue
            proof = proofs.get((previous["tree_size"], size))
            if proof is None or not merkle.verify_consistency(
                old_size=previous["tree_size"],
                new_size=size,
                old_root=bytes.fromhex(previous["root_hash"]),
                new_root=bytes.fromhex(head["root_hash"]),
                proof=_hashes(proof),
            ):
                check.fail(f"{label}: not consistent with the head of {previous['tree_size']}")
                continue
        roots[size] = bytes.fromhex(head["root_hash"])
        previous = head
    return roots


def _check_entries(
    bundle: dict[str, Any], key: Ed25519PublicKey, roots: dict[int, bytes], check: BundleCheck
) -> None:
    manifest = bundle["manifest"]
    if not _signed(key, manifest["signature"], manifest_message(manifest)):
        check.fail("the manifest's signature does not verify: the list of entries is not trusted")
    size = manifest["tree_size"]
    root = roots.get(size)
    if root is None:
        check.fail(f"no valid signed tree head of {size} entries, which the entries are proven in")
    entries = {e["seq"]: e for e in bundle["entries"]}
    check.entries = len(entries)
    for seq in manifest["seqs"]:
        if seq not in entries:
            check.fail(f"entry {seq}: in the manifest but missing from the bundle", seq=seq)
    for seq in sorted(entries):
        entry = entries[seq]
        if seq not in manifest["seqs"]:
            check.fail(f"entry {seq}: not in the signed manifest", seq=seq)
            continue
        data = entry_bytes(
            seq=seq,
            prev=entry["prev_hash"],
            kind=entry["kind"],
            subject_type=entry["subject_type"],
            subject_id=entry["subject_id"],
            body_text=entry["body"],
            actor=entry["actor"],
            at=parse_at(entry["at"]),
        )
        if entry_hash(data) != entry["hash"]:
            check.fail(f"entry {seq}: content does not match its hash", seq=seq)
            continue
        before = entries.get(seq - 1)
        if before is not None and before["hash"] != entry["prev_hash"]:
            check.fail(f"entry {seq}: previous-hash link to entry {seq - 1} broken", seq=seq)
            continue
        if root is not None and not merkle.verify_inclusion(
            leaf=merkle.leaf_hash(data),
            index=seq - 1,
            size=size,
            proof=_hashes(entry["proof"]),
            root=root,
        ):
            check.fail(
                f"entry {seq}: its inclusion proof does not lead to the signed root", seq=seq
            )


def main(argv: list[str] | None = None) -> int:
    """Verify a bundle file; exit 0 when it holds, 1 when it does not, 2 when unreadable."""
    parser = argparse.ArgumentParser(
        prog="verify-bundle", description="verify a Vigil compliance-log bundle offline"
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--public-key", required=True, help="the trusted Ed25519 key, hex")
    args = parser.parse_args(argv)
    return report(args.file, public_key=args.public_key)


def report(path: Path, *, public_key: str) -> int:
    """Print what verifying the bundle at ``path`` found; the exit status."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{path}: cannot read the bundle: {exc}", file=sys.stderr)
        return 2
    check = verify(bundle, public_key=public_key)
    if check.ok:
        print(
            f"{path}: OK, {check.entries} entries proven in {check.tree_heads} signed tree "
            f"head(s) under key {key_fingerprint(public_key)[:16]}"
        )
        return 0
    if check.first_bad_entry is not None:
        print(f"{path}: FAILED: first bad entry {check.first_bad_entry}")
    for problem in check.problems:
        print(f"{path}: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
