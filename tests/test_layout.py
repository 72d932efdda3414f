"""The layout holds (issue 14): the kernel ``vigil/`` imports no domain, ``api/`` imports no
composition root, and no module imports another that imports it back. Read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_packaging import ROOT, top_level_imports

KERNEL = "vigil"
DOMAINS = (
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
ROOTS = ("runtime", "bench")
PACKAGES = (KERNEL, *DOMAINS, *ROOTS)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_at_load(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported when ``path`` is loaded (not inside functions, not for typing)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {name for name in names if name in modules}


def test_the_kernel_imports_no_domain_and_no_composition_root():
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in _modules().items()
        if module.split(".")[0] == KERNEL
        for name in top_level_imports(path) & {*DOMAINS, *ROOTS}
    }
    assert not wrong, sorted(wrong)


def test_no_domain_imports_the_composition_root():
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in _modules().items()
        if module.split(".")[0] in DOMAINS
        for name in top_level_imports(path) & set(ROOTS)
    }
    assert not wrong, sorted(wrong)


def test_no_import_cycle():
    modules = _modules()
    graph = {module: _imports_at_load(path, modules) - {module} for module, path in modules.items()}
    # a package imports its own submodules without a cycle in the sense that matters here
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, [" -> ".join(cycle) for cycle in cycles]
