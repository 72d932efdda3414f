"""The Merkle tree over the compliance log, as RFC 6962 / RFC 9162 define it: leaf and node
hashes with domain separation, tree heads, inclusion and consistency proofs and their checks.
Standard library only (a regulator's verifier needs nothing else).

Hashes here are raw 32-byte SHA-256 digests; callers hold them as hex text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 2.1.1: the hash of an empty tree


def leaf_hash(data: bytes) -> bytes:
    """HASH(0x00 || leaf data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_below(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """A tree of ``size`` leaves held as levels of concatenated hashes (an unpaired last node
    is carried up unchanged, which is exactly RFC 6962's left-balanced tree). Every perfect
    aligned subtree's hash is then one slot of a level, so the hash of any range, and any
    proof, takes O(log n) hashing."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        level = bytearray(b"".join(leaves))
        self.levels: list[bytearray] = [level]
        width = self.size
        while width > 1:
            below, above = self.levels[-1], bytearray()
            for i in range(0, width - 1, 2):
                at = i * HASH_SIZE
                above += node_hash(below[at : at + HASH_SIZE], below[at + HASH_SIZE : at + 64])
            if width % 2:
                above += below[(width - 1) * HASH_SIZE : width * HASH_SIZE]
            self.levels.append(above)
            width = (width + 1) // 2

    def node(self, level: int, index: int) -> bytes:
        """The hash at ``index`` of ``level``."""
        at = index * HASH_SIZE
        return bytes(self.levels[level][at : at + HASH_SIZE])

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self.node(0, index)

    def root(self) -> bytes:
        """MTH of the whole tree."""
        return self.range_hash(0, self.size)

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range of this tree's leaves whose left part splits on powers of
        two from ``lo`` (every range the RFC's recursions ask for)."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:  # a perfect aligned subtree: one slot
            return self.node(n.bit_length() - 1, lo // n)
        k = _largest_power_below(n)
        return node_hash(self.range_hash(lo, lo + k), self.range_hash(lo + k, hi))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.3.1: the audit path of leaf ``index`` in the tree of the first ``size``
        leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _largest_power_below(n)
        if m < k:
            return [*self._path(m, lo, lo + k), self.range_hash(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self.range_hash(lo, lo + k)]

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.4.1: proof that the tree of ``old`` leaves is a prefix of the tree of
        ``new`` leaves (default: all)."""
        new = self.size if new is None else new
        if not 0 < old <= new <= self.size:
            raise ValueError(f"no consistency proof from {old} to {new}")
        if old == new:
            return []
        return self._subproof(old, 0, new, True)

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self.range_hash(lo, hi)]
        k = _largest_power_below(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, whole), self.range_hash(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self.range_hash(lo, lo + k)]


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    return Tree(leaves).root() if leaves else EMPTY_ROOT


def verify_inclusion(
    *, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: whether ``proof`` leads from leaf ``index`` to ``root`` of a tree of
    ``size`` leaves."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    *, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: whether ``proof`` shows the tree of ``old_size`` leaves with
    ``old_root`` to be a prefix of the tree of ``new_size`` leaves with ``new_root``."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class Frontier:
    """The right edge of a tree: the roots of its perfect subtrees, largest first (a compact
    range of RFC 9162's leaves 0..size). Appending a leaf and taking the root cost O(log n),
    so a tree head over a log of any length costs only what was appended since the last."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} subtree roots")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        self.hashes.append(leaf)
        self.size += 1
        # the low bits of the new size say how many equal-sized subtrees now pair up
        merges = (self.size & -self.size).bit_length() - 1
        for _ in range(merges):
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(node_hash(left, right))

    def root(self) -> bytes:
        """MTH of the tree so far."""
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for subtree in reversed(self.hashes[:-1]):
            result = node_hash(subtree, result)
        return result
