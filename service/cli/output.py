"""How `aat` prints: plain lines that are never cut, aligned tables, and progress.

Output is for people and for scripts alike, so nothing here truncates or wraps a value (an id
cut at 80 columns cannot be copied). Progress goes to stderr: a live bar on a terminal, plain
``stage 42%`` lines otherwise (a log file or CI shows what ran). rich loads only for the bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol


def echo(text: str, *, err: bool = False) -> None:
    """Print ``text`` as it is (no markup, no wrapping) on stdout, or stderr with ``err``."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned to their widest cell, two spaces apart; cells are never shortened."""
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class ProgressView(Protocol):
    def update(self, label: str, completed: float) -> None:
        """The step running now is ``label``; ``completed`` of the view's total is done."""


class _Lines:
    """Plain progress lines: one when the step changes, or every 10 % within a step."""

    def __init__(self, total: float) -> None:
        self.total = total or 1.0
        self.last: tuple[str, int] | None = None
        self.started = time.monotonic()

    def update(self, label: str, completed: float) -> None:
        pct = int(100 * min(1.0, completed / self.total))
        step = label.split(" ")[0]  # "pre-upscale 3/16" is still the pre-upscale step
        if self.last is not None and self.last[0] == step and pct < self.last[1] + 10:
            return
        self.last = (step, pct)
        echo(f"{label:<14} {pct:>3}%  {time.monotonic() - self.started:5.1f}s", err=True)


class _Quiet:
    def update(self, label: str, completed: float) -> None:
        return None


class _Bar:
    def __init__(self, progress: Any, total: float) -> None:
        self.progress = progress
        self.task = progress.add_task("", total=total)

    def update(self, label: str, completed: float) -> None:
        self.progress.update(self.task, completed=completed, description=label)


@contextmanager
def progress_view(*, quiet: bool, total: float, transient: bool = False,
                  ) -> Iterator[ProgressView]:
    """A bar on a terminal (stderr), plain lines when stderr is not one, nothing if quiet."""
    if quiet:
        yield _Quiet()
        return
    if not sys.stderr.isatty():
        yield _Lines(total)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description:<18}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=transient) as progress:
        yield _Bar(progress, total)
