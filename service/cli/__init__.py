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
    "service.cli.upscale",
    "service.cli.watch",
    "service.cli.jobs",
    "service.cli.api",
    "service.cli.client",
    "service.cli.emulate",
    "service.cli.deploy",
    "service.cli.animate",
]


def _assemble() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


# Top-level modules of the optional extras in pyproject.toml -> the extra that installs them.
_EXTRA_OF = {
    **dict.fromkeys(("fastapi", "uvicorn", "multipart", "python_multipart", "sqlalchemy",
                     "alembic", "psycopg", "celery", "kombu", "redis", "prometheus_client"),
                    "service"),
    "watchdog": "watcher",
    **dict.fromkeys(("boto3", "botocore", "s3transfer"), "s3"),
    **dict.fromkeys(("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors",
                     "runpod"), "gpu"),
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """'the 'X' extra (module is not installed); install it with: ...' when ``exc`` is a
    module of an optional extra, else None."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"the '{extra}' extra ({top} is not installed); install it with: "
            f"pip install 'ai-assets-toolbox[{extra}]' (from a clone: "
            f".venv/bin/pip install -e '.[{extra}]')")


def main() -> None:
    try:
        _assemble()()
    except ModuleNotFoundError as exc:
        needs = missing_extra(exc)
        if needs is None:
            raise
        typer.echo(f"error [missing_extra]: this command needs {needs}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
