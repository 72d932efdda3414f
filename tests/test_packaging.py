"""A plain ``pip install .`` (no dev extras) runs every process: no production module imports a
package that only the dev extras install. Checked on the source, so that it costs no venv."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "vigil",
    "runtime",
    "fleet",
    "gateway",
    "ingest",
    "compliance",
    "alerts",
    "simulators",
    "api",
    "workorders",
    "reports",
)
# import names of the dev-only distributions (pyproject's [project.optional-dependencies] dev)
DEV_IMPORTS = {
    "pytest": "pytest",
    "pytest-asyncio": "pytest_asyncio",
    "pytest-timeout": "pytest_timeout",
    "hypothesis": "hypothesis",
    "ruff": "ruff",
    "aiosmtpd": "aiosmtpd",
    "schemathesis": "schemathesis",
    "playwright": "playwright",
}
# the pytest plugins shipped in the packages: only pytest itself loads them
TEST_ONLY = {"vigil/testing.py", "simulators/testing.py"}


def _dev_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["optional-dependencies"]["dev"]:
        names.add(requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip())
    return names


def top_level_imports(path: Path) -> set[str]:
    """The top-level names of every absolute import in a file (anywhere in it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_every_dev_distribution_is_known():
    # a new dev extra must be added to DEV_IMPORTS, or this guard would miss it
    assert _dev_distributions() == set(DEV_IMPORTS)


def test_production_code_imports_no_dev_only_package():
    dev = set(DEV_IMPORTS.values())
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in TEST_ONLY:
                continue
            for name in sorted(top_level_imports(path) & dev):
                offenders.append(f"{relative} imports {name}")
    assert offenders == []
