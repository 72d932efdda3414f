"""psycopg 3 connections and pools."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowFactory, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

T = TypeVar("T")


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One synchronous connection (dict rows)."""
    return psycopg.connect(url, autocommit=autocommit, row_factory=dict_row)


async def aconnect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection:
    """One asynchronous connection (dict rows)."""
    return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, row_factory=dict_row)


def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    autocommit: bool = False,
    row_factory: RowFactory[Any] = dict_row,
) -> ConnectionPool:
    """An opened synchronous pool (dict rows unless told); close it with ``pool.close()`` or
    use it as a context."""
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": row_factory, "autocommit": autocommit},
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


async def open_async_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, autocommit: bool = False
) -> AsyncConnectionPool:
    """An opened asynchronous pool (``autocommit``: a read is one round trip, no BEGIN and
    COMMIT around it)."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": autocommit},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def run_in_thread(
    pool: ConnectionPool,
    action: Callable[..., T],
    /,
    *,
    transaction: bool = False,
    **kwargs: Any,
) -> T:
    """Run a synchronous ``action(conn, **kwargs)`` in a worker thread on a pooled connection
    (with ``transaction``: inside one transaction, for autocommit pools)."""

    def call() -> T:
        with pool.connection() as conn:
            if not transaction:
                return action(conn, **kwargs)
            with conn.transaction():
                return action(conn, **kwargs)

    return await asyncio.to_thread(call)
