"""A world built through the registry's service: the one way tests, benchmarks and the demo
create jurisdictions, parties, sites, gateways, devices and contracts.

Every method takes the record's fields as keyword arguments, fills the rest with plausible
defaults, writes it with ``fleet.service.write`` and returns the row's id (or, for gateways and
devices, their id string). Names and codes not given are made unique per factory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from fleet import service
from fleet.models import KINDS, FleetRecord, WriteResult


class FleetFactory:
    """Creates registry records on ``conn`` at the clock's ``at``."""

    def __init__(self, conn: psycopg.Connection, *, at: datetime) -> None:
        self.conn = conn
        self.at = at
        self._serial = itertools.count(1)

    def _next(self) -> int:
        return next(self._serial)

    def write(self, kind_name: str, /, **fields: Any) -> Any:
        """Write one record of a kind (by natural key: created or updated); its row id."""
        kind = kind_name
        spec = KINDS[kind]
        record: FleetRecord = spec.record.model_validate(fields)
        result = service.write(self.conn, kind=spec, records=[record], at=self.at)
        key = service.key_of(spec, record)
        if key in result.ids:
            return result.ids[key]
        if kind in ("devices", "gateways"):
            return key[0]
        if kind in ("components", "assignments"):
            return key
        if kind == "contracts":
            row = service.get(self.conn, kind=spec, key=key)
            return row["row_id"]
        return service.ids_of(self.conn, kind=spec, keys=[key[0]])[key[0]]

    def bulk(
        self, kind_name: str, /, records: Iterable[dict[str, Any]], *, chunk: int = 5000
    ) -> WriteResult:
        """Write many records of a kind (benchmarks' fleets), ``chunk`` per statement batch."""
        spec = KINDS[kind_name]
        result = WriteResult()
        batch: list[FleetRecord] = []
        for fields in records:
            batch.append(spec.record.model_validate(fields))
            if len(batch) >= chunk:
                result += service.write(self.conn, kind=spec, records=batch, at=self.at)
                batch = []
        if batch:
            result += service.write(self.conn, kind=spec, records=batch, at=self.at)
        return result

    def update(self, kind_name: str, /, *key: Any, **changes: Any) -> None:
        """Change fields of the record of natural key ``key`` (or of row id ``key``)."""
        spec = KINDS[kind_name]
        if len(key) == 1 and isinstance(key[0], int):
            key = (self.name_of(kind_name, key[0]),)
        current = service.record_of(spec, service.get(self.conn, kind=spec, key=key))
        record = spec.record.model_validate(current.model_dump() | changes)
        service.write(self.conn, kind=spec, records=[record], at=self.at)

    def retire(self, kind_name: str, /, *key: Any) -> None:
        """Retire the record of natural key ``key`` (its history stays)."""
        assert service.retire(self.conn, kind=KINDS[kind_name], key=key, at=self.at)

    def name_of(self, kind: str, row_id: int) -> str:
        """The natural key of a numeric-id row (what another record names it by)."""
        spec = KINDS[kind]
        rows = service.list_records(
            self.conn,
            kind=spec,
            scope=sql.SQL("t.id = %(row)s"),
            scope_params={"row": row_id},
            include_retired=True,
        )
        return rows[0][spec.key[0]]

    def _ref(self, kind: str, value: int | str) -> str:
        return self.name_of(kind, value) if isinstance(value, int) else value

    def jurisdiction(self, code: str | None = None, **fields: Any) -> int:
        """A jurisdiction (default policies of RULES.md)."""
        code = code or f"j{self._next()}"
        return self.write("jurisdictions", code=code, name=fields.pop("name", code), **fields)

    def user_unit(self, name: str | None = None) -> int:
        """A user unit (building owner)."""
        return self.write("user_units", name=name or f"Unit {self._next()}")

    def safety_manager(self, *, user_unit: int | str, **fields: Any) -> int:
        """A safety manager of a user unit."""
        n = self._next()
        fields.setdefault("name", f"Safety manager {n}")
        fields.setdefault("certificate_no", f"SM-{n:05d}")
        if isinstance(fields.get("site"), int):
            fields["site"] = self._ref("sites", fields["site"])
        return self.write("safety_managers", user_unit=self._ref("user_units", user_unit), **fields)

    def site(
        self,
        *,
        user_unit: int | str | None = None,
        jurisdiction: int | str | None = None,
        **fields: Any,
    ) -> int:
        """A site (Shanghai, city tier unless given)."""
        n = self._next()
        fields.setdefault("code", f"site-{n}")
        fields.setdefault("name", f"Site {n}")
        fields.setdefault("latitude", 31.2)
        fields.setdefault("longitude", 121.5)
        fields.setdefault("tier", "city")
        unit = user_unit if user_unit is not None else self.user_unit()
        where = jurisdiction if jurisdiction is not None else self.jurisdiction()
        return self.write(
            "sites",
            user_unit=self._ref("user_units", unit),
            jurisdiction=self._ref("jurisdictions", where),
            **fields,
        )

    def firm(self, name: str | None = None, **fields: Any) -> int:
        """A maintenance firm, licensed for years unless given."""
        n = self._next()
        fields.setdefault("licence_no", f"LIC-{n:05d}")
        fields.setdefault("licence_expires_on", date(2099, 1, 1))
        return self.write("firms", name=name or f"Firm {n}", **fields)

    def technician(self, *, firm: int | str, **fields: Any) -> int:
        """A technician of a firm, certified for years unless given."""
        n = self._next()
        fields.setdefault("name", f"Technician {n}")
        fields.setdefault("certificate_no", f"CERT-{n:05d}")
        fields.setdefault("certificate_expires_on", date(2099, 1, 1))
        return self.write("technicians", firm=self._ref("firms", firm), **fields)

    def manufacturer(self, name: str | None = None) -> int:
        """A lift manufacturer."""
        return self.write("manufacturers", name=name or f"Maker {self._next()}")

    def gateway(
        self, gateway_id: str | None = None, *, site: int | str | None = None, **fields: Any
    ) -> str:
        """An edge gateway, at a site when given."""
        if site is not None:
            fields["site"] = self._ref("sites", site)
        return self.write("gateways", id=gateway_id or f"gw-{self._next()}", **fields)

    def device(
        self,
        device_id: str | None = None,
        *,
        site: int | str,
        kind: str = "elevator",
        firm: int | str | None = None,
        contract_from: date | None = None,
        contract_days: int = 3650,
        **fields: Any,
    ) -> str:
        """A device at a site; with ``firm``, under that firm's contract from ``contract_from``
        (default: the registration day) for ``contract_days``."""
        fields.setdefault("model", _MODELS.get(kind, kind))
        if isinstance(fields.get("manufacturer"), int):
            fields["manufacturer"] = self._ref("manufacturers", fields["manufacturer"])
        device_id = device_id or f"dev-{self._next()}"
        self.write("devices", id=device_id, kind=kind, site=self._ref("sites", site), **fields)
        if firm is not None:
            registered = fields.get("registered_at") or self.at
            starts = contract_from or (registered - timedelta(days=1)).date()
            self.contract(
                device=device_id,
                firm=firm,
                starts_on=starts,
                ends_on=starts + timedelta(days=contract_days),
            )
        return device_id

    def contract(
        self, *, device: str, firm: int | str, starts_on: date, ends_on: date, **fields: Any
    ) -> int:
        """A maintenance contract (the device's firm while it is in force)."""
        return self.write(
            "contracts",
            device=device,
            firm=self._ref("firms", firm),
            starts_on=starts_on,
            ends_on=ends_on,
            **fields,
        )

    def assign(self, *, technician: int | str, device: str) -> None:
        """Assign a technician to a device (what the technician sees, rule A2)."""
        self.write("assignments", technician=self._ref("technicians", technician), device=device)

    def component(self, *, device: str, component: str, model: str) -> None:
        """The certified model of a lift's safety component (rule M9)."""
        self.write("components", device=device, component=component, model=model)


# The built-in profile each kind runs by default (vigil/profiles).
_MODELS = {
    "elevator": "lift-controller",
    "energy_meter": "sdm630",
    "water_meter": "water-meter",
    "light_pole": "street-light",
    "high_mast": "high-mast-8",
}
