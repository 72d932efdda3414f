"""Progress of long command-line work (fleet import, migrations, simulator start-up, audit
verify and export, benchmarks): a bar on a terminal's stderr, nothing when stderr is piped or
the command was asked to be quiet, so logs and scripts see only the results."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(*, desc: str, unit: str, total: int | None = None, quiet: bool = False) -> tqdm:
    """A bar on stderr when stderr is a terminal (``update(n)``, ``close()``)."""
    # Whether to draw is decided here (is_shown), so callers and the bar agree. The size is
    # given: on a terminal that reports none (a fresh pseudo-terminal: 0x0) tqdm
    # draws nothing; shutil falls back to 80x24.
    size = shutil.get_terminal_size()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not is_shown(quiet=quiet),
        ncols=size.columns,
        nrows=size.lines,
    )


def counted(
    items: Iterable[T], *, desc: str, unit: str, total: int | None = None, quiet: bool = False
) -> Iterator[T]:
    """``items``, one by one, counted on a bar (see ``bar``)."""
    with bar(desc=desc, unit=unit, total=total, quiet=quiet) as shown:
        for item in items:
            yield item
            shown.update(1)


def is_shown(*, quiet: bool = False) -> bool:
    """Whether a bar would be drawn (stderr is a terminal and not quiet)."""
    return not quiet and sys.stderr.isatty()
