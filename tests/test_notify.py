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
