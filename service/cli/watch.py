"""`aat watch`: run the watch-folder daemon, show its ledger, or retry failed files."""

from __future__ import annotations

from pathlib import Path

import typer


def watch(
    polling: bool = typer.Option(False, "--polling",
                                 help="Poll the folders (network drives) instead of OS events."),
    status: bool = typer.Option(False, "--status", help="Show the watch ledger and exit."),
    retry: Path | None = typer.Option(None, "--retry", metavar="PATH",
                                      help="Submit failed files at PATH (file or folder) again."),
) -> None:
    """Upscale every image that lands in the watch folders.

    The folders come from AAT_WATCH_FOLDERS (one path, or a JSON list) or aat.toml.
    """
    from service.settings import load_settings
    from watcher import commands

    settings = load_settings(**({"watch_polling": True} if polling else {}))
    commands.configure_logging(settings)
    if status:
        for line in commands.status_lines(settings):
            typer.echo(line)
        return
    if retry is not None:
        typer.echo(f"{commands.retry(settings, retry)} file(s) will be submitted again")
        return
    commands.serve(settings)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
