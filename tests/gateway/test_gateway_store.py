"""The SQLite outbox: order, bound and drop count, persistence of queue and sequence numbers."""

from __future__ import annotations

from gateway.store import CommandRecord, Outbox, Outgoing


def message(n: int, device: str = "d1", seq: int | None = None) -> Outgoing:
    return Outgoing(f"t/{n}", f"payload {n}".encode(), seq_device=device, seq=seq)


def test_messages_come_out_in_order_and_leave_on_ack(tmp_path):
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=100)
    outbox.append([message(n) for n in range(5)])
    rows = outbox.peek(after=0, limit=3)
    assert [r.topic for r in rows] == ["t/0", "t/1", "t/2"]
    assert [r.topic for r in outbox.peek(after=rows[-1].id, limit=10)] == ["t/3", "t/4"]
    assert outbox.ack([rows[0].id, rows[1].id]) == 2
    assert outbox.ack([rows[0].id]) == 0  # a second PUBACK deletes nothing
    assert outbox.depth == 3
    assert [r.topic for r in outbox.peek(after=0, limit=10)] == ["t/2", "t/3", "t/4"]


def test_the_oldest_are_dropped_only_past_the_bound_and_counted(tmp_path):
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=10)
    outbox.append([message(n) for n in range(10)])
    assert (outbox.depth, outbox.dropped) == (10, 0)
    outbox.append([message(n) for n in range(10, 13)])
    assert (outbox.depth, outbox.dropped) == (10, 3)
    assert [r.topic for r in outbox.peek(after=0, limit=1)] == ["t/3"]
    outbox.close()
    reopened = Outbox(tmp_path / "q.sqlite3", max_messages=10)
    assert (reopened.depth, reopened.dropped) == (10, 3)  # both survive a restart


def test_sequence_numbers_are_never_reused_after_a_restart(tmp_path):
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=100)
    seqs = [outbox.take_seq("d1") for _ in range(3)]
    assert seqs == [0, 1, 2]
    outbox.append([message(n, seq=s) for n, s in enumerate(seqs)])
    outbox.take_seq("d1")  # taken but never stored (a crash before the append)
    outbox.close()
    reopened = Outbox(tmp_path / "q.sqlite3", max_messages=100)
    assert reopened.take_seq("d1") == 3
    assert reopened.take_seq("d2") == 0


def test_command_records_and_pending_lockouts(tmp_path):
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=100)
    outbox.record_command(CommandRecord("c1", "lift", "lockout", "pending_safety", "", 10))
    outbox.record_command(CommandRecord("c2", "pole", "dim", "done", "", 11))
    assert [r.id for r in outbox.pending_commands("lift")] == ["c1"]
    outbox.record_command(CommandRecord("c1", "lift", "lockout", "done", "applied", 10))
    assert outbox.pending_commands("lift") == []
    assert outbox.command("c1").detail == "applied"
    outbox.forget_commands(before_ms=11)
    assert outbox.command("c1") is None and outbox.command("c2") is not None


def test_a_corrupt_buffer_is_named_moved_aside_and_replaced(tmp_path, caplog):
    path = tmp_path / "q.sqlite3"
    garbage = b"this is not a database\x00" * 300
    path.write_bytes(garbage)
    with caplog.at_level("ERROR", logger="gateway.store"):
        outbox = Outbox(path, max_messages=100)  # used to raise a bare sqlite error at start
    assert outbox.recovery is not None and outbox.recovery.path == path
    assert outbox.recovery.moved_to.read_bytes() == garbage  # set aside, never deleted
    moved, lost = [r.getMessage() for r in caplog.records]
    assert str(path) in moved and str(outbox.recovery.moved_to) in moved
    assert outbox.lost is not None and "lost" in lost and f"epoch {outbox.epoch}" in lost
    outbox.append([message(1)])  # a fresh buffer works
    assert [r.topic for r in outbox.peek(after=0, limit=5)] == ["t/1"]


def test_a_drop_episode_is_logged_once_and_the_count_is_exact(tmp_path, caplog):
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=10, now_ms=lambda: 1_767_600_000_000)
    outbox.append([message(n) for n in range(10)])
    in_flight = outbox.peek(after=0, limit=3)  # sent, awaiting PUBACK
    with caplog.at_level("WARNING", logger="gateway.store"):
        outbox.append([message(n) for n in range(10, 15)])  # 5 past the bound
        outbox.append([message(n) for n in range(15, 17)])  # still full: no second line
        assert outbox.dropped == 7
        # the 3 in flight were dropped, then acknowledged: delivered after all
        outbox.ack([r.id for r in in_flight])
        assert outbox.dropped == 4
        rest = outbox.peek(after=0, limit=10)
        outbox.ack([r.id for r in rest[:2]])  # under the bound again: the episode ends
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "is full (10 messages)" in lines[0]
    assert "4 messages dropped, queued between 2026-01-05T08:00:00+00:00" in lines[1]
    outbox.close()
    assert Outbox(tmp_path / "q.sqlite3", max_messages=10).dropped == 4  # persisted exact


def test_a_lost_buffer_starts_a_new_epoch_and_says_so(tmp_path, caplog):
    path = tmp_path / "q.sqlite3"
    outbox = Outbox(path, max_messages=100)
    assert (outbox.epoch, outbox.lost) == (1, None)  # first start: nothing was lost
    outbox.append([message(n, seq=outbox.take_seq("d1")) for n in range(3)])
    outbox.close()
    again = Outbox(path, max_messages=100)
    assert (again.epoch, again.lost, again.next_seq("d1")) == (1, None, 3)  # an ordinary restart
    again.close()
    path.write_bytes(b"")  # truncated while the gateway was stopped
    with caplog.at_level("ERROR", logger="gateway.store"):
        after = Outbox(path, max_messages=100)
    # the sequence numbers start again, in a new epoch: (device, epoch, seq) stays unique
    assert (after.epoch, after.next_seq("d1")) == (2, 0)
    assert after.lost == "buffer missing or empty"
    assert any("lost" in r.getMessage() for r in caplog.records)
    after.close()
    for side in tmp_path.glob("q.sqlite3*"):
        if not side.name.endswith(".epoch"):
            side.unlink()  # deleted outright
    assert Outbox(path, max_messages=100).epoch == 3
