import asyncio

import psycopg

from vigil import notify
from vigil.notify import EventNotice, StateNotice


async def test_notices_arrive_only_after_commit_and_parse(db_url):
    async with notify.Listener(db_url, [notify.EVENTS, notify.STATE]) as listener:
        stream = aiter(listener)
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            rolled_back = EventNotice(1, "lift-1", "door_state", 1_767_600_000_000, 0.0, 2.0)
            await notify.asend(conn, notify.EVENTS, [notify.event_payload(rolled_back)])
            await conn.rollback()
            notice = EventNotice(7, "lift-1", "door_state", 1_767_600_000_000, 2.0, 0.0)
            await notify.asend(conn, notify.EVENTS, [notify.event_payload(notice)])
            await notify.asend(conn, notify.STATE, notify.state_payloads(["b", "a", "a"]))
            await conn.commit()
        assert await asyncio.wait_for(anext(stream), 5) == notice
        assert await asyncio.wait_for(anext(stream), 5) == StateNotice(("a", "b"))


def test_state_payloads_split_under_the_limit():
    devices = [f"device-{i:05d}" for i in range(3000)]
    payloads = notify.state_payloads(devices)
    assert len(payloads) > 1
    assert all(len(p) < 8000 for p in payloads)
    seen = [d for p in payloads for d in notify.parse(notify.STATE, p).devices]
    assert seen == sorted(devices)


async def _first(listener, match):
    async for notice in listener:
        if match(notice):
            return notice
    return None


async def test_a_new_iteration_carries_on_mid_batch_and_after_a_timeout(db_url):
    # A defect behind a flaky end-to-end test: each `async for` over the listener started a new
    # psycopg notifies() generator; leaving one after the first notice of a batch (one commit,
    # one packet) dropped the rest of that batch, so a second wait never saw them.
    async with notify.Listener(db_url, [notify.EVENTS]) as listener:
        notices = [
            EventNotice(i, "lift-1", "door_state", 1_767_600_000_000 + i, float(i), None)
            for i in range(1, 6)
        ]
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await notify.asend(conn, notify.EVENTS, [notify.event_payload(n) for n in notices])
            await conn.commit()
        for expected in notices:
            got = await asyncio.wait_for(_first(listener, lambda n: True), 5)
            assert got == expected
        # a wait that times out (and is cancelled) does not break the listener
        try:
            await asyncio.wait_for(_first(listener, lambda n: True), 0.2)
        except TimeoutError:
            pass
        late = EventNotice(9, "lift-1", "door_state", 1_767_600_000_009, 9.0, None)
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await notify.asend(conn, notify.EVENTS, [notify.event_payload(late)])
            await conn.commit()
        assert await asyncio.wait_for(_first(listener, lambda n: True), 5) == late
