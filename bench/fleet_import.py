"""Import a firm's fleet of 100,000 devices from CSV files: ``vigil fleet import`` end to end.

    vigil bench fleet_import [--devices 100000] [--database-url URL]

The set: 2 jurisdictions, 200 user units, 2,000 sites, 20 firms with 1,000 technicians, 1,000
gateways, N devices (80% lifts with their registration code, inspection date and Modbus address;
the rest meters), a contract per device and two certified components per lift. It is written to
a temporary folder, then imported into an empty registry (all created), imported again
(unchanged), and checked only (``--check``, rolled back).

Baseline, measured in the same run on the same server: the same device rows written by a raw
``COPY devices FROM STDIN`` into an empty registry, the fastest way PostgreSQL takes them, with
no validation, references resolved in SQL and no per-row report. The ratio says what validation,
natural-key resolution, upsert-by-key and all-or-nothing cost over the bare load.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from fleet import flows
from vigil.db import migrate
from vigil.services import PostgresServer

NOW = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def write_set(folder: Path, *, devices: int) -> dict[str, int]:
    """The CSV files of the fleet; returns rows per file."""
    lifts = devices * 8 // 10
    rows: dict[str, list[list[object]]] = {
        "jurisdictions": [["sh-huangpu", "黄浦区", "city"], ["js-kunshan", "昆山市", "elsewhere"]],
        "user_units": [[f"物业公司 {u:03d}"] for u in range(200)],
        "sites": [
            [
                f"site-{s:04d}",
                f"物业公司 {s % 200:03d}",
                "sh-huangpu" if s % 4 else "js-kunshan",
                f"大厦 {s}",
                f"{s} 号",
                31.0 + s * 1e-4,
                121.0 + s * 1e-4,
                "city" if s % 4 else "elsewhere",
            ]
            for s in range(2000)
        ],
        "firms": [[f"维保公司 {f:02d}", f"TS31-{f:04d}", "2029-12-31"] for f in range(20)],
        "technicians": [
            [f"T-{t:05d}", f"维保公司 {t % 20:02d}", f"技师 {t}", "2028-06-30", "T1;T2"]
            for t in range(1000)
        ],
        "manufacturers": [["华夏电梯股份有限公司"]],
        "gateways": [[f"gw-{g:04d}", f"site-{g * 2:04d}"] for g in range(1000)],
        "devices": [],
        "components": [],
        "contracts": [],
    }
    for d in range(devices):
        lift = d < lifts
        gateway = d % 1000
        rows["devices"].append(
            [
                f"dev-{d:06d}",
                "elevator" if lift else "energy_meter",
                "lift-controller" if lift else "sdm630",
                f"site-{gateway * 2:04d}",
                "华夏电梯股份有限公司" if lift else "",
                f"gw-{gateway:04d}",
                f"10.{gateway // 250}.{gateway % 250}.{1 + (d // 1000) % 200}",
                502,
                1 + d % 3,
                f"SN-{d:07d}",
                (NOW - timedelta(days=d % 700)).isoformat(),
                f"梯11沪{d:06d}" if lift else "",
                (date(2026, 7, 1) + timedelta(days=d % 365)).isoformat() if lift else "",
            ]
        )
        rows["contracts"].append(
            [f"dev-{d:06d}", f"维保公司 {d % 20:02d}", "2026-01-01", "2026-12-31"]
        )
        if lift:
            rows["components"].append([f"dev-{d:06d}", "safety_gear", "HX-SG-200"])
            rows["components"].append([f"dev-{d:06d}", "overspeed_governor", "HX-OG-3"])
    headers = {
        "jurisdictions": ["code", "name", "default_tier"],
        "user_units": ["name"],
        "sites": [
            "code",
            "user_unit",
            "jurisdiction",
            "name",
            "address",
            "latitude",
            "longitude",
            "tier",
        ],
        "firms": ["name", "licence_no", "licence_expires_on"],
        "technicians": [
            "certificate_no",
            "firm",
            "name",
            "certificate_expires_on",
            "qualifications",
        ],
        "manufacturers": ["name"],
        "gateways": ["id", "site"],
        "devices": [
            "id",
            "kind",
            "model",
            "site",
            "manufacturer",
            "gateway",
            "modbus_host",
            "modbus_port",
            "modbus_unit",
            "serial_no",
            "registered_at",
            "registration_code",
            "next_inspection_due",
        ],
        "components": ["device", "component", "model"],
        "contracts": ["device", "firm", "starts_on", "ends_on"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for kind, body in rows.items():
        with (folder / f"{kind}.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(headers[kind])
            writer.writerows(body)
    return {kind: len(body) for kind, body in rows.items()}


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def _import(url: str, folder: Path, *, check: bool = False) -> flows.ImportReport:
    with psycopg.connect(url) as conn:
        return flows.import_fleet(conn, path=folder, at=NOW, check=check)


def _raw_copy(url: str, folder: Path) -> int:
    """The baseline: the device rows by COPY, sites and gateways resolved in SQL afterwards."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE raw_devices (id text, kind text, model text, site text,"
            " manufacturer text, gateway text, modbus_host text, modbus_port int,"
            " modbus_unit int, serial_no text, registered_at timestamptz,"
            " registration_code text, next_inspection_due date)"
        )
        with (
            conn.cursor().copy(
                "COPY raw_devices FROM STDIN WITH (FORMAT csv, HEADER true)"
            ) as copy,
            (folder / "devices.csv").open("rb") as source,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        count = conn.execute(
            "INSERT INTO devices (id, kind, model, site_id, manufacturer_id, gateway_id,"
            " modbus_host, modbus_port, modbus_unit, serial_no, registered_at,"
            " registration_code, next_inspection_due)"
            " SELECT r.id, r.kind, r.model, s.id, m.id, r.gateway, r.modbus_host,"
            " r.modbus_port, r.modbus_unit, r.serial_no, r.registered_at,"
            " nullif(r.registration_code, ''), r.next_inspection_due"
            " FROM raw_devices r JOIN sites s ON s.code = r.site"
            " LEFT JOIN manufacturers m ON m.name = nullif(r.manufacturer, '')"
        ).rowcount
        conn.commit()
    return count


def _fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    return url


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="vigil bench fleet_import")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--database-url", help="a server's admin URL instead of a private one")
    args = parser.parse_args(argv)
    server = None
    admin_url = args.database_url
    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-fleet-"))
    if admin_url is None:
        scratch.chmod(0o755)  # PostgreSQL runs as another user when we are root
        server = PostgresServer(scratch / "data", durable=False)
        server.start()
        admin_url = server.url()
    try:
        folder = scratch / "fleet"
        seconds, sizes = _timed(write_set, folder, devices=args.devices)
        total = sum(sizes.values())
        print(f"fleet set: {total:,} rows in {len(sizes)} files ({seconds:.1f} s to write)")
        for kind, count in sizes.items():
            print(f"  {kind:<14} {count:>8,}")

        # the baseline: an empty registry with the same parties, then the devices by raw COPY
        baseline_url = _fresh_database(admin_url, "bench_fleet_copy")
        parties = scratch / "parties"
        parties.mkdir()
        for kind in ("jurisdictions", "user_units", "sites", "manufacturers", "gateways"):
            (parties / f"{kind}.csv").write_bytes((folder / f"{kind}.csv").read_bytes())
        _import(baseline_url, parties)
        raw_s, copied = _timed(_raw_copy, baseline_url, folder)

        url = _fresh_database(admin_url, "bench_fleet")
        first_s, report = _timed(_import, url, folder)
        devices = report.results["devices"]
        again_s, again = _timed(_import, url, folder)
        check_s, _ = _timed(_import, url, folder, check=True)

        print(f"\nimport into an empty registry : {first_s:7.1f} s  {total / first_s:9,.0f} rows/s")
        print(f"  devices created             : {len(devices.created):,}")
        print(
            f"re-import, nothing changed     : {again_s:7.1f} s  "
            f"({sum(r.unchanged for r in again.results.values()):,} rows unchanged)"
        )
        print(f"--check (validated, rolled back): {check_s:6.1f} s")
        print(
            f"baseline: raw COPY of {copied:,} device rows: {raw_s:.2f} s "
            f"({copied / raw_s:,.0f} rows/s)"
        )
        per_device_import = first_s / total
        per_device_copy = raw_s / copied
        print(
            f"ratio (import per row / raw COPY per row): {per_device_import / per_device_copy:.1f}"
        )
        print("note: 2 shared cores, database on the same machine; run it twice")
    finally:
        if server is not None:
            server.stop()
    return 0
