"""Rules M2, M3, M4, M9, M10: records, evidence verdicts, corrections, sign-off, findings."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest

from compliance.log import flows as log_flows
from compliance.log import service as log_service
from compliance.maintenance import flows, service
from compliance.maintenance.models import (
    Part,
    PartChange,
    RecordError,
    Tier,
    Verdict,
    checklist,
    tier_items,
)
from vigil.catalog import ServiceMode


def test_annex_a_checklists_are_cumulative_31_44_59_76():
    # rule M2: TSG T5002 annex A counts per tier, each tier including the lower ones
    assert [len(tier_items(t)) for t in Tier] == [31, 13, 15, 17]
    assert [len(checklist(t)) for t in Tier] == [31, 44, 59, 76]
    assert set(checklist(Tier.HALF_MONTHLY)) < set(checklist(Tier.QUARTERLY))


def test_a_full_visit_is_verified_with_its_evidence_stored_beside_the_verdict(estate, clock):
    # rule M3: inspection mode >= 20 min inside the window, car top and pit both used
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    record, judgement = estate.record("lift-1", start, end, at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.VERIFIED
    row = estate.conn.execute(
        "SELECT verdict, onsite, onsite_minutes, evidence, rule_values FROM maintenance_verdicts "
        "WHERE record_id = %s",
        (record.id,),
    ).fetchone()
    assert row["verdict"] == "verified"
    assert row["onsite"].lower == start and row["onsite"].upper == end
    assert row["onsite_minutes"] == 45
    assert len(row["evidence"]["intervals"]) == 1
    assert row["evidence"]["intervals"][0]["start_event_id"] is not None
    assert len(row["evidence"]["car_top_event_ids"]) == 1
    assert len(row["evidence"]["pit_event_ids"]) == 1
    assert row["rule_values"]["min_onsite_minutes"] == 20
    kinds = [e.kind for e in log_service.entries(estate.conn)]
    assert kinds == ["maintenance.record", "maintenance.verdict"]
    assert log_flows.verify(estate.conn).ok


def test_never_on_site_is_no_evidence(estate, clock):
    start = clock.now() - timedelta(hours=2)
    _, judgement = estate.record("lift-1", start, start + timedelta(hours=1), at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.NO_EVIDENCE


def test_a_visit_shorter_than_the_minimum_is_too_short(estate, clock):
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2), minutes=12)
    _, judgement = estate.record("lift-1", start, end, at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.TOO_SHORT
    assert judgement.onsite_minutes == 12


def test_the_minimum_on_site_time_is_a_per_jurisdiction_value(estate, clock):
    service.set_policy(estate.conn, jurisdiction_id=estate.jurisdiction_id, min_onsite_minutes=10)
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2), minutes=12)
    _, judgement = estate.record("lift-1", start, end, at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.VERIFIED
    assert judgement.rule_values["min_onsite_minutes"] == 10


def test_an_oiling_only_visit_that_never_uses_car_top_or_pit(estate, clock):
    # rule M3: the "oiling only" fraud: inspection mode for long enough, but no station used
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2), car_top=False, pit=False)
    _, judgement = estate.record("lift-1", start, end, at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.NO_CAR_TOP_OR_PIT
    # car top alone is not enough either
    later, later_end = estate.visit("lift-1", clock.now() - timedelta(minutes=50), pit=False)
    _, second = estate.record("lift-1", later, later_end, at=clock.now())
    assert second is not None and second.verdict is Verdict.NO_CAR_TOP_OR_PIT


def test_a_visit_outside_the_claimed_window(estate, clock):
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=6))
    claimed = clock.now() - timedelta(hours=2)
    _, judgement = estate.record("lift-1", claimed, claimed + timedelta(hours=1), at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.OUTSIDE_WINDOW
    assert judgement.evidence["nearby_intervals"][0]["start"] == start
    # overlapping the window by only a few minutes is outside the window too
    _, partial = estate.record(
        "lift-1", end - timedelta(minutes=5), end + timedelta(hours=1), at=clock.now()
    )
    assert partial is not None and partial.verdict is Verdict.OUTSIDE_WINDOW


def test_one_visit_written_up_twice_is_a_duplicate(estate, clock):
    # rule M3: "one visit written up as two"
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=3))
    first, j1 = estate.record("lift-1", start, end, at=clock.now())
    _second, j2 = estate.record(
        "lift-1", start - timedelta(minutes=10), end + timedelta(minutes=10), at=clock.now()
    )
    assert j1 is not None and j1.verdict is Verdict.VERIFIED
    assert j2 is not None and j2.verdict is Verdict.DUPLICATE_VISIT
    assert j2.evidence["duplicate_of"] == [first.id]


def test_a_record_is_immutable_and_a_correction_is_a_new_record(estate, clock):
    # rule M4
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=3))
    first, _ = estate.record("lift-1", start, end, at=clock.now())
    for statement in (
        "UPDATE maintenance_records SET notes = 'edited' WHERE id = %s",
        "DELETE FROM maintenance_records WHERE id = %s",
        "UPDATE maintenance_verdicts SET verdict = 'too_short' WHERE record_id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            estate.conn.execute(statement, (first.id,))
    # The correction claims the same interval: it replaces the old record, it is no duplicate.
    fixed, judgement = estate.record(
        "lift-1",
        start,
        end,
        at=clock.now(),
        notes="brake pads noted",
        corrects_id=first.id,
        correction_reason="forgot the brake note",
    )
    assert fixed.corrects_id == first.id and fixed.id != first.id
    assert judgement is not None and judgement.verdict is Verdict.VERIFIED
    assert service.is_superseded(estate.conn, record_id=first.id)
    with pytest.raises(RecordError, match="already corrected"):
        estate.record(
            "lift-1", start, end, at=clock.now(), corrects_id=first.id, correction_reason="again"
        )
    with pytest.raises(RecordError, match="both"):
        estate.record("lift-1", start, end, at=clock.now(), corrects_id=fixed.id)


def test_bad_records_get_clear_errors_and_nothing_is_stored(estate, clock):
    now = clock.now()
    cases = [
        ({"tier": "monthly", "items": ["A1.01"]}, "unknown tier"),
        ({"items": ["A1.01", "Z9.99"]}, "unknown checklist items: Z9.99"),
        ({"end": now - timedelta(hours=3)}, "after claimed_start"),
        ({"end": now + timedelta(hours=2)}, "before it ends"),
        ({"device": "nope"}, "no elevator"),
        ({"parts": (Part("brake", ""),)}, "model number"),
    ]
    for change, message in cases:
        with pytest.raises(RecordError, match=message):
            estate.record(
                change.get("device", "lift-1"),
                now - timedelta(hours=2),
                change.get("end", now - timedelta(hours=1)),
                at=now,
                tier=change.get("tier", Tier.HALF_MONTHLY),
                items=change.get("items"),
                parts=change.get("parts", ()),
            )
    assert estate.conn.execute("SELECT count(*) AS n FROM maintenance_records").fetchone()["n"] == 0
    assert log_service.head(estate.conn)[0] == 0


def test_an_incomplete_checklist_credits_only_the_tiers_it_completes(estate, clock):
    # rule M2: a "quarterly" visit that skipped quarterly items only resets the half-monthly clock
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    items = checklist(Tier.QUARTERLY)[:-1]
    record, _ = estate.record(
        "lift-1", start, end, at=clock.now(), tier=Tier.QUARTERLY, items=items
    )
    assert record.credited_tier is Tier.HALF_MONTHLY
    assert record.checklist_total == 44
    clocks = estate.conn.execute(
        "SELECT * FROM maintenance_clocks WHERE device_id = 'lift-1'"
    ).fetchone()
    assert clocks["half_monthly_at"] == end and clocks["quarterly_at"] is None


def test_sign_off_by_the_safety_manager_once(estate, clock):
    # rule M4
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    record, _ = estate.record("lift-1", start, end, at=clock.now())
    flows.sign_off(
        estate.conn,
        record_id=record.id,
        user_unit_id=estate.user_unit_id,
        signed_by="Ms Li",
        at=clock.now(),
    )
    with pytest.raises(RecordError, match="already signed off"):
        flows.sign_off(
            estate.conn,
            record_id=record.id,
            user_unit_id=estate.user_unit_id,
            signed_by="Ms Li",
            at=clock.now(),
        )
    other = estate.fleet.user_unit("Other")
    with pytest.raises(RecordError, match="another user unit"):
        flows.sign_off(
            estate.conn, record_id=record.id, user_unit_id=other, signed_by="X", at=clock.now()
        )
    signed = log_service.entries(estate.conn, kind="maintenance.signoff")
    assert len(signed) == 1 and signed[0].body["signed_by"] == "Ms Li"


def test_replaced_safety_components_must_match_the_certified_model(estate, clock):
    # rule M9
    estate.fleet.component(device="lift-1", component="safety_gear", model="SG-200")
    estate.fleet.component(device="lift-1", component="governor", model="OG-7")
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    record, _ = estate.record(
        "lift-1",
        start,
        end,
        at=clock.now(),
        parts=(
            Part("safety_gear", "SG-200", PartChange.REPLACEMENT, safety=True),  # matches
            Part("governor", "OG-9", PartChange.REPAIR, safety=True),  # modification as repair
            Part("buffer", "BF-1", PartChange.REPLACEMENT, safety=True),  # not certified
            Part("door_roller", "DR-3"),  # not a safety part: no check
        ),
    )
    findings = service.open_findings(
        estate.conn, subject_type="maintenance_record", subject_id=str(record.id)
    )
    assert sorted((f["rule"], f["kind"]) for f in findings) == [
        ("M9", "modification_booked_as_repair"),
        ("M9", "uncertified_component"),
    ]
    mismatch, _ = estate.record(
        "lift-1",
        start,
        end,
        at=clock.now(),
        parts=(Part("safety_gear", "SG-999", PartChange.REPLACEMENT, safety=True),),
        corrects_id=record.id,
        correction_reason="wrong part list",
    )
    kinds = [f["kind"] for f in service.open_findings(estate.conn, subject_id=str(mismatch.id))]
    assert kinds == ["component_mismatch"]


def test_only_qualified_technicians_and_visits_by_others_are_flagged(estate, clock):
    # rule M10
    conn = estate.conn
    expired = estate.fleet.technician(
        firm=estate.firm_id,
        name="Zhao",
        certificate_no="CERT-2",
        certificate_expires_on=date(2025, 12, 31),
    )
    on = clock.now().date()
    assert [t.id for t in service.qualified_technicians(conn, firm_id=estate.firm_id, on=on)] == [
        estate.technician_id
    ]
    estate.fleet.update("firms", estate.firm_id, licence_expires_on=date(2026, 1, 1))
    assert service.qualified_technicians(conn, firm_id=estate.firm_id, on=on) == []
    estate.fleet.update("firms", estate.firm_id, licence_expires_on=date(2030, 1, 1))
    start, end = estate.visit("lift-1", clock.now() - timedelta(hours=2))
    record, _ = flows.submit_record(
        conn,
        device_id="lift-1",
        technician_id=expired,
        tier=Tier.HALF_MONTHLY,
        claimed_start=start,
        claimed_end=end,
        checklist_done=checklist(Tier.HALF_MONTHLY),
        recorded_by="zhao",
        at=clock.now(),
    )
    kinds = [f["kind"] for f in service.open_findings(conn, subject_id=str(record.id))]
    assert kinds == ["unqualified_technician"]


def test_late_evidence_is_judged_again(estate, clock):
    # Store-and-forward may deliver the visit's events after the record was written.
    start = clock.now() - timedelta(hours=2)
    end = start + timedelta(minutes=45)
    record, judgement = estate.record("lift-1", start, end, at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.NO_EVIDENCE
    estate.visit("lift-1", start)
    assert flows.rejudge_device(estate.conn, device_id="lift-1", now=clock.now()) == 1
    verdict = service.current_verdict(estate.conn, record_id=record.id)
    assert verdict is not None and verdict["verdict"] == "verified"
    verdicts = log_service.entries(estate.conn, kind="maintenance.verdict")
    assert [v.body["verdict"] for v in verdicts] == ["no_evidence", "verified"]


def test_a_locked_out_controller_shows_the_visit_through_its_inspection_stations(estate, clock):
    # rule M3: an inspection control station switched on is inspection operation, even when the
    # controller keeps reporting its lockout's out-of-service mode in service_mode
    conn, t = estate.conn, clock.now() - timedelta(hours=2)
    estate.event("lift-1", "service_mode", t - timedelta(hours=1), ServiceMode.OUT_OF_SERVICE)
    estate.event("lift-1", "car_top_inspection", t, 1)
    estate.event("lift-1", "car_top_inspection", t + timedelta(minutes=12), 0)
    estate.event("lift-1", "pit_inspection", t + timedelta(minutes=15), 1)
    estate.event("lift-1", "pit_inspection", t + timedelta(minutes=26), 0)
    _, judgement = estate.record("lift-1", t, t + timedelta(minutes=30), at=clock.now())
    assert judgement is not None and judgement.verdict is Verdict.VERIFIED
    assert judgement.onsite_minutes == 23
    assert len(judgement.evidence["intervals"]) == 2
    # the same stations for only 9 minutes in all are too short
    u = t + timedelta(minutes=40)
    estate.event("lift-1", "car_top_inspection", u, 1)
    estate.event("lift-1", "car_top_inspection", u + timedelta(minutes=4), 0)
    estate.event("lift-1", "pit_inspection", u + timedelta(minutes=5), 1)
    estate.event("lift-1", "pit_inspection", u + timedelta(minutes=10), 0)
    _, short = estate.record("lift-1", u, u + timedelta(minutes=15), at=clock.now())
    assert short is not None and short.verdict is Verdict.TOO_SHORT
    assert conn.execute("SELECT count(*) AS n FROM maintenance_verdicts").fetchone()["n"] == 2
