"""The Merkle tree of the compliance log against RFC 6962's recursive definitions, for every
size up to 40: roots, inclusion and consistency proofs, and their checks refusing alterations."""

import hashlib

import pytest

from compliance.log import merkle


def rfc_mth(leaves):
    """RFC 6962 2.1, word for word."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(rfc_mth(leaves[:k]), rfc_mth(leaves[k:]))


def rfc_path(m, leaves):
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k]), rfc_mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), rfc_mth(leaves[:k])]


def rfc_subproof(m, leaves, whole):
    n = len(leaves)
    if m == n:
        return [] if whole else [rfc_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), rfc_mth(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), rfc_mth(leaves[:k])]


LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(40)]


@pytest.mark.parametrize("size", range(1, 41))
def test_roots_and_proofs_match_the_rfc(size):
    leaves = LEAVES[:size]
    tree = merkle.Tree(leaves)
    root = tree.root()
    assert root == rfc_mth(leaves)
    for m in range(size):
        proof = tree.inclusion_proof(m)
        assert proof == rfc_path(m, leaves)
        assert merkle.verify_inclusion(leaf=leaves[m], index=m, size=size, proof=proof, root=root)
        if proof:
            bent = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
            assert not merkle.verify_inclusion(
                leaf=leaves[m], index=m, size=size, proof=bent, root=root
            )
        assert not merkle.verify_inclusion(
            leaf=LEAVES[39 - m] if size < 40 else b"x" * 32, index=m, size=size, proof=proof,
            root=root,
        )  # fmt: skip
    for old in range(1, size + 1):
        proof = tree.consistency_proof(old)
        assert proof == (rfc_subproof(old, leaves, True) if old < size else [])
        old_root = rfc_mth(leaves[:old])
        assert merkle.verify_consistency(
            old_size=old, new_size=size, old_root=old_root, new_root=root, proof=proof
        )
        if old < size:
            assert not merkle.verify_consistency(
                old_size=old, new_size=size, old_root=b"\x00" * 32, new_root=root, proof=proof
            )


def test_a_tree_answers_for_its_prefixes():
    # proofs against an older, smaller head come from the same levels
    tree = merkle.Tree(LEAVES)
    for size in (1, 7, 16, 33):
        root = rfc_mth(LEAVES[:size])
        assert tree.range_hash(0, size) == root
        proof = tree.inclusion_proof(size - 1, size)
        assert merkle.verify_inclusion(
            leaf=LEAVES[size - 1], index=size - 1, size=size, proof=proof, root=root
        )
        assert tree.consistency_proof(size, 40) == rfc_subproof(size, LEAVES, True) or size == 40


def test_a_frontier_gives_every_prefix_root_from_what_was_appended():
    frontier = merkle.Frontier()
    assert frontier.root() == merkle.EMPTY_ROOT
    for size in range(1, 41):
        frontier.append(LEAVES[size - 1])
        assert frontier.root() == rfc_mth(LEAVES[:size])
        assert len(frontier.hashes) == bin(size).count("1")
    # carried over from a stored head and extended, it agrees with a tree built whole
    resumed = merkle.Frontier(frontier.size, frontier.hashes)
    with pytest.raises(ValueError):
        merkle.Frontier(7, frontier.hashes)  # 7 leaves make three subtrees, 40 two
    assert resumed.root() == merkle.Tree(LEAVES).root()
