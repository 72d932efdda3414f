"""Password hashing (scrypt), session tokens and API keys: secrets never stored in the clear."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

# scrypt cost: about 16 MiB and tens of milliseconds per hash, paid only at login.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LEN = 32

SESSION_PREFIX = "vs_"
API_KEY_PREFIX = "vk_"
_KEY_ID_LEN = 12


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, cost: int = _SCRYPT_N) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$n$r$p$salt$hash`` (the cost travels with it,
    so it can be raised later without invalidating stored hashes)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=cost, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LEN
    )
    return f"scrypt${cost}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**26,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def token_hash(token: str) -> str:
    """SHA-256 hex of a high-entropy token (a fast hash suffices: tokens are not guessable)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    """A fresh session token."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """An API key as shown once to its owner, with what is stored of it."""

    key: str  # vk_<prefix>_<secret>, shown once
    prefix: str
    secret_hash: str


def new_api_key() -> NewApiKey:
    """A fresh API key: a public prefix to look it up by, and a secret kept only as a hash."""
    prefix = secrets.token_hex(_KEY_ID_LEN // 2)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(f"{API_KEY_PREFIX}{prefix}_{secret}", prefix, token_hash(secret))


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed API key, or None."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != _KEY_ID_LEN or not secret:
        return None
    return prefix, secret


def api_key_matches(secret: str, secret_hash: str) -> bool:
    """True when ``secret`` hashes to ``secret_hash`` (constant-time comparison)."""
    return hmac.compare_digest(token_hash(secret), secret_hash)
