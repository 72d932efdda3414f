"""Decisions of authentication: how long a run of failed logins locks an account or address."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Throttle:
    """How failed logins on one kind of key (an account, a client address) are slowed down:
    ``free`` failures pass; each further one locks the key for ``base`` doubled per failure
    beyond, up to ``cap``; a key without a failure for ``forget`` starts again."""

    free: int
    base: timedelta
    cap: timedelta
    forget: timedelta

    def lock_for(self, failures: int) -> timedelta | None:
        """How long the ``failures``-th failure in a row locks the key (None: not at all)."""
        if failures <= self.free:
            return None
        doublings = min(failures - self.free - 1, 30)  # 2**30 x base is past any cap
        return min(self.base * 2**doublings, self.cap)


# an account: 5 tries, then 15 s, 30 s, 1 min ... up to 15 min a try
ACCOUNT = Throttle(
    free=5, base=timedelta(seconds=15), cap=timedelta(minutes=15), forget=timedelta(hours=1)
)
# a client address (an office behind one address has many users): 20 tries, then the same
ADDRESS = Throttle(
    free=20, base=timedelta(seconds=15), cap=timedelta(minutes=15), forget=timedelta(hours=1)
)


def account_key(username: str) -> str:
    """The throttle key of an account (also for names that do not exist)."""
    return f"user:{username.lower()}"


def address_key(address: str) -> str:
    """The throttle key of a client address."""
    return f"addr:{address}"


def retry_after(locked_until: datetime, *, now: datetime) -> int:
    """Whole seconds until a lock ends (at least 1), for ``Retry-After``."""
    return max(1, math.ceil((locked_until - now).total_seconds()))
