"""``vigil bench [NAME] [ARGS...]``: run a benchmark from ``bench/`` and print its figures.

Benchmarks are plain scripts (``bench/NAME.py`` with a ``main(argv)`` function); they are not
part of the test run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from vigil.config import Settings

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def available() -> list[str]:
    """Names of the benchmarks in ``bench/``."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def run(name: str, argv: list[str]) -> int:
    """Run one benchmark's ``main(argv)``."""
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        print(
            f"vigil bench: no benchmark {name!r}; have: {', '.join(available())}", file=sys.stderr
        )
        return 2
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would be (dataclasses and pickling look it up).
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)


def _handle(args: argparse.Namespace, settings: Settings) -> int:
    if not args.name:
        print("\n".join(available()) or "(no benchmarks)")
        return 0
    return run(args.name, args.args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    parser = sub.add_parser("bench", help="run a benchmark from bench/ (lists them without NAME)")
    parser.add_argument("name", nargs="?", help="benchmark name")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    parser.set_defaults(handler=_handle)
