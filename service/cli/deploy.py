"""`aat deploy runpod`: create or update the RunPod templates and endpoints from the settings.

    aat deploy runpod --dry-run         # show the plan, change nothing
    aat deploy runpod --write-config    # apply, then store the endpoint ids in aat.toml
    aat deploy runpod --down            # delete the endpoints and templates it manages

The rules (what is wanted, how existing ones are found, what counts as a change) live in
:mod:`service.backends.runpod.deploy`; this module only prints and writes the config file.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

deploy_app = typer.Typer(help="Provision what the service runs on (RunPod GPU endpoints).",
                         no_args_is_help=True, rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


def write_endpoint_ids(path: Path, ids: dict[str, str | None]) -> None:
    """Set (or, for None, remove) ``runpod_<kind>_endpoint_id`` at the top of the TOML file at
    ``path``, keeping its other lines and comments; written atomically."""
    import tomlkit

    from service.core.atomic import atomic_write

    doc = tomlkit.parse(path.read_text("utf-8")) if path.exists() else tomlkit.document()
    for kind, value in ids.items():
        key = f"runpod_{kind}_endpoint_id"
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    atomic_write(path, tomlkit.dumps(doc).encode("utf-8"))


@deploy_app.command("runpod")
def runpod(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change "
                                 "nothing."),
    down: bool = typer.Option(False, "--down", help="Delete the endpoints and templates this "
                              "command manages."),
    write_config: bool = typer.Option(False, "--write-config", help="Store the endpoint ids "
                                      "in aat.toml (AAT_CONFIG) after applying."),
) -> None:
    """Create or update the upscale and caption endpoints on RunPod (idempotent)."""
    from service.backends.runpod import deploy as rd
    from service.core.errors import ConfigError
    from service.settings import load_settings, toml_path

    settings = load_settings()
    if settings.runpod_api_key is None:
        raise ConfigError("`aat deploy runpod` needs RUNPOD_API_KEY (a key with write "
                          "access to serverless endpoints and templates)")
    rest = rd.RunPodRest(settings.runpod_rest_url, settings.runpod_api_key.get_secret_value())
    try:
        actions = (rd.plan_down(rest, settings) if down
                   else rd.plan(rest, rd.desired(settings), rd.known_ids(settings)))
        for action in actions:
            typer.echo(("would " if dry_run and action.verb != "keep" else "")
                       + action.describe())
        if not actions:
            typer.echo("nothing to remove" if down else "nothing to do")
        if dry_run:
            return
        ids = rd.apply(rest, actions)
    finally:
        rest.close()
    if down:
        removed = {a.kind: None for a in actions if a.what == "endpoint"}
        if write_config and removed:
            write_endpoint_ids(toml_path(), dict(removed))
            typer.echo(f"removed the endpoint ids from {toml_path()}")
        return
    for kind, endpoint_id in ids.items():
        typer.echo(f"RUNPOD_{kind.upper()}_ENDPOINT_ID={endpoint_id}")
    if write_config:
        write_endpoint_ids(toml_path(), dict(ids))
        typer.echo(f"wrote the endpoint ids to {toml_path()}")
        shadowing = [f"RUNPOD_{k.upper()}_ENDPOINT_ID" for k, v in ids.items()
                     if os.environ.get(f"RUNPOD_{k.upper()}_ENDPOINT_ID", v) != v]
        if shadowing:
            typer.echo(f"note: {', '.join(shadowing)} in the environment overrides aat.toml; "
                       "update or unset it", err=True)
