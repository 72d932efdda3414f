"""Rule A3: records are kept at least their retention period (maintenance 4 years, other
service records 3 years); the purge deletes them only after it, only once a signed checkpoint
covers their history, never a record a kept one names, and never the log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.log import flows as log_flows
from compliance.log import service as log_service
from compliance.maintenance import flows as maintenance
from compliance.maintenance import service as maintenance_service
from compliance.maintenance.models import Tier, checklist
from tests.workorders.conftest import patrol
from tests.workorders.test_lifecycle import _close
from workorders import flows, service

YEAR = timedelta(days=365)  # calendar years: one 29 February falls in these spans


def _exists(conn, table: str, row_id: int) -> bool:
    return conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", (row_id,)).fetchone() is not None


def test_service_records_go_after_three_years_once_a_checkpoint_covers_them(world, clock, tmp_path):
    order = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=clock.now()).work_order
    _close(world, clock, order.id)
    closed_at = clock.now()
    entries_before = log_service.head(world.conn)[0]
    key = log_flows.load_or_create_key(tmp_path / "key.pem")
    # past retention, but no signed checkpoint covers its history yet: kept
    assert service.purge(world.conn, now=closed_at + 4 * YEAR, years=3) == (0, 0)
    assert log_flows.create_checkpoint(world.conn, key=key, at=clock.now()) is not None
    # within retention: kept
    assert service.purge(world.conn, now=closed_at + 3 * YEAR - timedelta(days=1), years=3) == (
        0,
        0,
    )
    assert _exists(world.conn, "work_orders", order.id)
    assert service.purge(world.conn, now=closed_at + 3 * YEAR + timedelta(days=2), years=3) == (
        0,
        1,
    )
    assert not _exists(world.conn, "work_orders", order.id)
    assert service.steps(world.conn, work_order_id=order.id) == []
    # the log keeps the proof, and still verifies
    assert log_service.head(world.conn)[0] == entries_before
    kinds = [
        e.kind
        for e in log_service.entries(world.conn, subject_type="work_order", subject_id=order.id)
    ]
    assert kinds[0] == "work_order.opened" and kinds[-1] == "work_order.closed"
    assert log_flows.verify(world.conn).ok


def test_a_record_a_kept_one_names_is_kept(world, clock, tmp_path):
    # rule S5: the repeat fault names the earlier order, so the earlier one stays with it
    first = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=clock.now()).work_order
    _close(world, clock, first.id)
    repeat = flows.open_or_repeat(
        world.conn, source=patrol(world.lift), at=clock.advance(timedelta(days=20))
    ).work_order
    assert repeat.repeat_of == first.id
    key = log_flows.load_or_create_key(tmp_path / "key.pem")
    log_flows.create_checkpoint(world.conn, key=key, at=clock.now())
    assert service.purge(world.conn, now=clock.now() + 5 * YEAR, years=3) == (0, 0)
    assert _exists(world.conn, "work_orders", first.id)


def test_steps_are_never_deleted_outside_the_purge(world, clock):
    order = flows.open_or_repeat(world.conn, source=patrol(world.lift), at=clock.now()).work_order
    with pytest.raises(Exception, match="append-only"):
        world.conn.execute("DELETE FROM work_order_steps WHERE work_order_id = %s", (order.id,))


def test_maintenance_records_are_kept_four_years_and_their_log_stays(world, clock, tmp_path):
    visit_end = clock.now() - timedelta(hours=1)
    record, _ = maintenance.submit_record(
        world.conn,
        device_id=world.lift,
        technician_id=world.technician_id,
        tier=Tier.HALF_MONTHLY,
        claimed_start=visit_end - timedelta(hours=1),
        claimed_end=visit_end,
        checklist_done=checklist(Tier.HALF_MONTHLY),
        recorded_by="wang",
        at=clock.now(),
    )
    key = log_flows.load_or_create_key(tmp_path / "key.pem")
    log_flows.create_checkpoint(world.conn, key=key, at=clock.now())
    purge = maintenance_service.purge_records
    # TSG T5002: at least four years, whatever other records keep
    assert purge(world.conn, now=visit_end + 4 * YEAR - timedelta(days=1), years=4) == 0
    assert _exists(world.conn, "maintenance_records", record.id)
    assert purge(world.conn, now=visit_end + 4 * YEAR + timedelta(days=2), years=4) == 1
    assert not _exists(world.conn, "maintenance_records", record.id)
    assert log_service.entries(world.conn, subject_type="maintenance_record", subject_id=record.id)
    assert log_flows.verify(world.conn).ok
    with pytest.raises(Exception, match="append-only"):
        world.conn.execute("DELETE FROM compliance_log")
