"""The console's words: every text of app.js has its Chinese, every code its names in both
languages (issue 17: words, not codes)."""

from __future__ import annotations

import re

from api import STATIC_DIR
from vigil.catalog import (
    CODE_NAMES,
    KIND_NAMES,
    CarStatus,
    DeviceKind,
    Direction,
    DoorState,
    FaultCode,
    LockoutState,
    ServiceMode,
    catalog_names,
)

LANGUAGES = ("zh-CN", "en")


def _chinese() -> dict[str, str]:
    text = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    return dict(re.findall(r'"((?:[^"\\]|\\.)+)": "((?:[^"\\]|\\.)*)"', text))


def _english_texts() -> set[str]:
    """The texts app.js shows through t(): literals, table heads, empty rows, view labels."""
    app = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    texts = set(re.findall(r'\bt\("((?:[^"\\]|\\.)+)"', app))
    for heads in re.findall(r"headRow\(\[(.*?)\]\)", app):
        texts.update(x for x in re.findall(r'"([^"]+)"', heads))
    texts.update(re.findall(r'emptyRow\(\d+, "([^"]+)"', app))
    # a choice of two texts: t(ok ? "a" : "b"), emptyRow(n, open ? "a" : "b")
    for pair in re.findall(r'(?:\bt\(|emptyRow\(\d+, )[^()?]*\? "([^"]+)" : "([^"]+)"', app):
        texts.update(pair)
    texts.update(re.findall(r'unproven\("([^"]+)"\)', app))
    texts.update(re.findall(r'label: "([^"]+)"', app))
    for table in ("INCIDENT_LABEL", "WO_LABEL"):
        block = app[app.index(f"const {table} = {{") :]
        texts.update(re.findall(r': "([^"]+)"', block[: block.index("};")]))
    return texts


def test_every_text_of_the_console_has_its_chinese():
    chinese = _chinese()
    texts = _english_texts()
    assert len(texts) > 150  # the extraction found the console's texts
    missing = sorted(t for t in texts if t not in chinese)
    assert not missing, missing
    # placeholders survive translation
    for english in texts:
        assert set(re.findall(r"{\w+}", english)) == set(re.findall(r"{\w+}", chinese[english]))


def test_every_status_a_tile_can_take_has_its_chinese():
    from fleet.models import Status

    chinese = _chinese()
    assert all(s.value.replace("_", " ") in chinese for s in Status)


def test_every_code_has_its_name_in_both_languages():
    # rule: GB/T 24476 service modes and fault codes, door states never shown bare
    for metric, enum in (
        ("service_mode", ServiceMode),
        ("fault_code", FaultCode),
        ("door_state", DoorState),
        ("car_status", CarStatus),
        ("direction", Direction),
        ("lockout_state", LockoutState),
    ):
        names = CODE_NAMES[metric]
        assert set(names) == set(enum), metric
        for member in enum:
            assert all(names[member][lang] for lang in LANGUAGES), (metric, member)
    assert set(KIND_NAMES) == set(DeviceKind)
    served = catalog_names()
    assert served["codes"]["fault_code"]["11"] == {"zh-CN": "困人", "en": "passengers trapped"}
    assert served["codes"]["lamp_on"]["0"]["en"] == "off"
