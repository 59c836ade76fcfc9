"""`aat`: the command line of AI Assets Toolbox.

Each group of commands lives next to what it drives and registers itself here through a
``register(app)`` function; this module only assembles them. `aat --help` must cost little more
than starting Python: command modules import only typer and pure core tables at module level
(settings, httpx and rich load inside the commands), and help is plain text (no rich).

Errors: a command raises; :class:`AatGroup` turns whatever escapes (an ``AatError``, a usage
error, Ctrl-C, a missing optional extra) into one line ``error [code]: message`` and the exit
status of :mod:`service.cli.errors`, the one rule for every command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from service.cli.errors import handle


class AatGroup(TyperGroup):
    """The `aat` group: runs a command and maps what it raises to one line and a status."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            status = result if isinstance(result, int) else 0
        except BaseException as exc:  # noqa: BLE001 - every exit goes through one rule
            status = handle(exc)
        if standalone_mode:
            sys.exit(status)
        return status


app = typer.Typer(
    name="aat",
    cls=AatGroup,
    help="AI Assets Toolbox: upscale game art with tiled diffusion, deliver it into game repos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no rich import, no boxes cut at 80 columns
    context_settings={"max_content_width": 120},
)

# Modules that add commands to `app` (each defines `register(app: typer.Typer) -> None`).
COMMAND_MODULES: list[str] = [
    "service.cli.upscale",
    "service.cli.watch",
    "service.cli.jobs",
    "service.cli.api",
    "service.cli.remote",
    "service.cli.emulate",
    "service.cli.deploy",
    "service.cli.animate",
]


def _assemble() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    """The `aat` entry point (exits with the status of :mod:`service.cli.errors`)."""
    _assemble()(prog_name="aat")


if __name__ == "__main__":
    main()
