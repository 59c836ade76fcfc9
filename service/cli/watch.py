"""`aat watch`: run the watch-folder daemon, show its ledger, or retry failed files."""

from __future__ import annotations

from pathlib import Path

import typer

from service.core.errors import AatError


def watch(
    polling: bool = typer.Option(False, "--polling",
                                 help="Poll the folders (network drives) instead of OS events."),
    status: bool = typer.Option(False, "--status", help="Show the watch ledger and exit."),
    retry: Path | None = typer.Option(None, "--retry", metavar="PATH",
                                      help="Submit failed files at PATH (file or folder) again."),
) -> None:
    """Watch the folders in AAT_WATCH_FOLDERS and upscale every image that lands in them."""
    from service.settings import load_settings
    from watcher import commands

    commands.configure_logging()
    try:
        settings = load_settings(**({"watch_polling": True} if polling else {}))
        if status:
            for line in commands.status_lines(settings):
                typer.echo(line)
            return
        if retry is not None:
            typer.echo(f"{commands.retry(settings, retry)} file(s) will be submitted again")
            return
        commands.serve(settings)
    except AatError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
