"""`aat`: the command line of AI Assets Toolbox.

Each group of commands lives next to what it drives and registers itself here through a
``register(app)`` function; this module only assembles them, so `aat --help` stays fast
(heavy imports happen inside the commands).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="aat",
    help="AI Assets Toolbox: upscale game art with tiled diffusion, deliver it into game repos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app` (each defines `register(app: typer.Typer) -> None`).
COMMAND_MODULES: list[str] = [
    "service.cli_upscale",
    "service.cli_watch",
    "service.cli_jobs",
    "service.cli_api",
    "service.cli_client",
    "service.cli_emulate",
]


def _assemble() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    _assemble()()


if __name__ == "__main__":
    main()
