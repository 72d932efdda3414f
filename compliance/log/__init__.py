"""Tamper-evident compliance log (rule A1): hash-chained entries, a Merkle tree over them and
signed tree heads, and self-contained bundles a regulator verifies offline.

Callers record a compliance fact with ``compliance.log.service.append(conn, kind=...,
subject_type=..., subject_id=..., body={...}, actor=..., at=...)`` inside the transaction that
writes the fact. This package imports nothing at load, so that ``compliance.log.bundle`` (the
offline verifier) needs only the standard library and ``cryptography``.
"""
