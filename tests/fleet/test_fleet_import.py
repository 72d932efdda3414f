"""``vigil fleet import``: a good set, each kind of bad row, re-import, dry run, ZIP, export."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from fleet import flows
from fleet.models import FleetError
from runtime.cli import main


def run_import(db_url: str, path: Path, *extra: str) -> int:
    return main(["fleet", "import", str(path), *extra])


@pytest.fixture
def cli_env(db_url, monkeypatch):
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    return db_url


def counts(db) -> dict[str, int]:
    tables = (
        "technician_assignments",
        "jurisdictions",
        "user_units",
        "sites",
        "safety_managers",
        "maintenance_firms",
        "technicians",
        "manufacturers",
        "gateways",
        "devices",
        "certified_components",
        "contracts",
    )
    return {t: db.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in tables}


def edit(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell of a CSV file (row 0 is the first data row)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0])
    rows[row][column] = value
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_example_set_imports_and_reimports_unchanged(db, clock, example, cli_env, capsys):
    assert run_import(cli_env, example) == 0
    first = capsys.readouterr().out
    assert "devices: 4 created, 0 updated, 0 unchanged" in first
    assert "contracts: 3 created" in first
    assert counts(db)["devices"] == 4 and counts(db)["certified_components"] == 4
    assert counts(db)["technician_assignments"] == 3
    lift = db.execute(
        "SELECT d.*, s.code FROM devices d JOIN sites s ON s.id = d.site_id "
        "WHERE d.id = 'bund-lift-1'"
    ).fetchone()
    assert lift["code"] == "bund-centre" and lift["modbus_host"] == "10.20.0.10"
    assert lift["registration_code"] == "梯11沪HP0001(19)"
    policy = db.execute(
        "SELECT p.grace_hours FROM compliance_policies p JOIN jurisdictions j "
        "ON j.id = p.jurisdiction_id WHERE j.code = 'js-kunshan'"
    ).fetchone()
    assert policy["grace_hours"] == 48  # rule M6 grace period of the jurisdiction

    before = counts(db)
    assert run_import(cli_env, example) == 0
    again = capsys.readouterr().out
    assert "devices: 0 created, 0 updated, 4 unchanged" in again
    assert "contracts: 0 created, 0 updated, 3 unchanged" in again
    assert counts(db) == before


def test_changed_row_is_updated_in_place(db, example, cli_env, capsys):
    assert run_import(cli_env, example) == 0
    edit(example / "devices.csv", 3, "next_inspection_due", "2027-01-10")
    edit(example / "jurisdictions.csv", 1, "grace_hours", "24")
    capsys.readouterr()
    assert run_import(cli_env, example) == 0
    out = capsys.readouterr().out
    assert "devices: 0 created, 1 updated, 3 unchanged" in out
    assert "jurisdictions: 0 created, 1 updated, 1 unchanged" in out
    due = db.execute("SELECT next_inspection_due FROM devices WHERE id = 'ks-lift-1'").fetchone()
    assert str(due["next_inspection_due"]) == "2027-01-10"


@pytest.mark.parametrize(
    ("file", "row", "column", "value", "line", "reason"),
    [
        ("devices.csv", 1, "kind", "escalator", 3, "kind"),  # not a device kind
        ("devices.csv", 0, "site", "nowhere", 2, "site 'nowhere' is not in the registry"),
        ("devices.csv", 2, "modbus_port", "70000", 4, "modbus_port"),
        ("devices.csv", 0, "registered_at", "2026-01-05T09:00:00", 2, "time zone"),
        ("devices.csv", 1, "registration_code", "梯11沪HP0001(19)", 3, "registration_code"),
        ("sites.csv", 0, "timezone", "Mars/Olympus", 2, "unknown time zone"),
        ("sites.csv", 1, "latitude", "north", 3, "latitude"),
        ("technicians.csv", 0, "firm", "Nobody Ltd", 2, "firm 'Nobody Ltd' is not in the"),
        ("technicians.csv", 1, "certificate_expires_on", "2027-02-30", 3, "date"),
        ("contracts.csv", 1, "starts_on", "2026-06-01", 3, "overlaps another contract"),
        ("contracts.csv", 0, "ends_on", "2025-01-01", 2, "ends_on is before starts_on"),
        ("contracts.csv", 2, "terms", "{not json", 4, "not JSON"),
        ("gateways.csv", 0, "id", "gw bad/id", 2, "id"),
        ("jurisdictions.csv", 0, "lockout_mode", "maybe", 2, "lockout_mode"),
        ("assignments.csv", 1, "technician", "T-9999", 3, "technician 'T-9999' is not in the"),
    ],
)
def test_a_bad_row_names_file_line_and_column_and_writes_nothing(
    db, example, cli_env, capsys, file, row, column, value, line, reason
):
    if (file, column) == ("contracts.csv", "starts_on"):
        # a second contract of bund-lift-1 overlapping the first
        edit(example / file, row, "device", "bund-lift-1")
    edit(example / file, row, column, value)
    before = counts(db)
    assert run_import(cli_env, example) == 1
    err = capsys.readouterr().err
    shown_column = "starts_on" if "overlaps" in reason else column
    expected = f"{example / file}:{line}: column '{shown_column}'"
    assert expected in err, err
    assert reason in err, err
    assert "nothing written" in err
    assert counts(db) == before  # all or nothing


def test_unknown_and_missing_columns_and_unknown_files(example, cli_env, capsys):
    text = (example / "firms.csv").read_text(encoding="utf-8")
    (example / "firms.csv").write_text(text.replace("duty_phone", "hotline", 1), encoding="utf-8")
    (example / "lifts.csv").write_text("id\nx\n", encoding="utf-8")
    assert run_import(cli_env, example) == 1
    err = capsys.readouterr().err
    assert "lifts.csv: the file name names no kind" in err
    (example / "lifts.csv").unlink()
    assert run_import(cli_env, example) == 1
    err = capsys.readouterr().err
    assert f"{example / 'firms.csv'}:1: column 'hotline': unknown column" in err
    (example / "user_units.csv").write_text("title\nA\n", encoding="utf-8")
    assert run_import(cli_env, example) == 1
    assert f"{example / 'user_units.csv'}:1: column 'name': missing key column" in (
        capsys.readouterr().err
    )


def test_duplicate_key_in_one_file(example, cli_env, capsys):
    rows = (example / "manufacturers.csv").read_text(encoding="utf-8")
    (example / "manufacturers.csv").write_text(rows + "华夏电梯股份有限公司\n", encoding="utf-8")
    assert run_import(cli_env, example) == 1
    assert "manufacturers.csv:3: column 'name': same key as line 2" in capsys.readouterr().err


def test_check_writes_nothing_and_reports_what_would_change(db, example, cli_env, capsys):
    assert run_import(cli_env, example, "--check") == 0
    out = capsys.readouterr().out
    assert "devices: 4 created" in out and "checked only, nothing written" in out
    assert counts(db)["devices"] == 0 and counts(db)["jurisdictions"] == 0


def test_zip_of_files_imports_like_the_folder(db, example, tmp_path, cli_env, capsys):
    archive = tmp_path / "fleet.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(example.glob("*.csv")):
            out.write(path, f"onboarding/{path.name}")
    assert run_import(cli_env, archive) == 0
    assert counts(db)["devices"] == 4
    edit(example / "devices.csv", 0, "kind", "tram")
    with zipfile.ZipFile(archive, "w") as out:
        out.write(example / "devices.csv", "devices.csv")
    assert run_import(cli_env, archive) == 1
    assert f"{archive}:devices.csv:2: column 'kind'" in capsys.readouterr().err


def test_export_round_trips(db, example, tmp_path, cli_env, capsys):
    assert run_import(cli_env, example) == 0
    out = tmp_path / "export"
    assert main(["fleet", "export", str(out)]) == 0
    for path in example.glob("*.csv"):
        exported = list(csv.DictReader((out / path.name).open(encoding="utf-8")))
        original = list(csv.DictReader(path.open(encoding="utf-8")))
        assert len(exported) == len(original), path.name
    capsys.readouterr()
    assert run_import(cli_env, out) == 0
    assert "0 created, 0 updated" in capsys.readouterr().out
    assert "created" not in capsys.readouterr().out


def test_read_sources_orders_files_by_dependency(example):
    names = [Path(s.name).stem for s in flows.read_sources(example)]
    assert names.index("sites") < names.index("devices") < names.index("contracts")
    with pytest.raises(FleetError, match="no such file"):
        flows.read_sources(example / "missing")


def test_the_firm_in_force_follows_contracts_as_days_pass(db, db_url, factory, clock):
    # rule A2 reads devices.firm_id: it must follow the contract in force, day by day
    from datetime import timedelta

    from fleet.scheduled import sync_firms
    from vigil.db.pool import open_pool

    site = factory.site()
    first, second = factory.firm("First"), factory.firm("Second")
    today = clock.now().date()
    device = factory.device("lift-x", site=site, firm=first, contract_from=today, contract_days=10)
    factory.contract(
        device=device,
        firm=second,
        starts_on=today + timedelta(days=11),
        ends_on=today + timedelta(days=20),
    )

    def firm() -> int | None:
        return db.execute("SELECT firm_id FROM devices WHERE id = 'lift-x'").fetchone()["firm_id"]

    assert firm() == first
    with open_pool(db_url, autocommit=True) as pool:
        assert sync_firms(pool, now=clock.now() + timedelta(days=10)) == 0  # its last day
        assert firm() == first
        assert sync_firms(pool, now=clock.now() + timedelta(days=11)) == 1
        assert firm() == second
        assert sync_firms(pool, now=clock.now() + timedelta(days=21)) == 1
        assert firm() is None  # no contract: no firm sees it as its own
