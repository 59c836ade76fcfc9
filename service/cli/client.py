"""Client commands of `aat` that talk HTTP to the API at ``AAT_SERVER_URL``.

`aat submit FILE [--wait]`, `aat jobs`, `aat status ID`, `aat cancel ID`,
`aat models list|upload|delete`, and `aat doctor` (checks settings, store, broker, RunPod
endpoints and the API, and says what to fix). Errors print one line
``error [code]: message`` on stderr; exit status 2 for input the API refused, 1 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from service.cli.http import ApiCallError, ApiClient
from service.core import formats
from service.core.errors import AatError
from service.settings import load_settings

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)

models_app = typer.Typer(help="LoRAs on the upscale worker's volume.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the client commands and the `models` group to the `aat` app."""
    for name, fn in (("submit", submit), ("jobs", jobs), ("status", status),
                     ("cancel", cancel), ("doctor", doctor)):
        app.command(name)(fn)
    app.add_typer(models_app, name="models")


@contextmanager
def _client() -> Iterator[ApiClient]:
    """An API client from the settings; any AatError becomes one line and an exit status."""
    client = None
    try:
        client = ApiClient.from_settings(load_settings())
        yield client
    except AatError as exc:
        _err.print(f"error [{exc.code}]: {exc.message}", markup=False, highlight=False,
                   soft_wrap=True)
        status = getattr(exc, "status", 0)
        raise typer.Exit(2 if 400 <= status < 500 and status not in (401, 403) else 1) from None
    finally:
        if client is not None:
            client.close()


def _query(options: dict[str, Any], params: list[str], loras: list[str]) -> dict[str, str]:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in options.items() if v is not None}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiCallError(f"--param {item!r} is not KEY=VALUE", code="invalid_params",
                               status=422)
        query[key.strip()] = value
    if loras:
        query["loras"] = ",".join(loras)
    return query


def submit(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Image to upscale."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow progress and fetch the result."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where --wait writes the "
                                       "result (default: next to FILE, e.g. rock_x2.png)."),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Scale factor (max 8)."),
    width: int | None = typer.Option(None, "--width", help="Output width in px."),
    height: int | None = typer.Option(None, "--height", help="Output height in px."),
    upscaler: str | None = typer.Option(None, "--upscaler", help="Base upscaler."),
    prompt: str | None = typer.Option(None, "--prompt", help="Global style prompt."),
    seam_fix: str | None = typer.Option(None, "--seam-fix", help="none, band or offset."),
    tileable: bool | None = typer.Option(None, "--tileable/--no-tileable", help="Seamless "
                                         "texture."),
    lora: list[str] = typer.Option([], "--lora", help="LoRA as name:weight (repeatable)."),
    asset_type: str | None = typer.Option(None, "--asset-type", help="auto, sprite, texture, "
                                          "ui, illustration, normal, mask or pixel_art."),
    sheet: str | None = typer.Option(None, "--sheet", help="Spritesheet cells: COLSxROWS, "
                                     "cell=WxH[,margin=N,spacing=N], or an Aseprite/"
                                     "TexturePacker .json, Godot .tres or Unity .meta file "
                                     "(with --wait its scaled copy is written beside the "
                                     "result)."),
    matte: str | None = typer.Option(None, "--matte", help="Background for transparency in "
                                     "formats without alpha (JPEG), e.g. '#ffffff'."),
    param: list[str] = typer.Option([], "--param", "-p", help="Any job parameter as KEY=VALUE "
                                    "(repeatable), e.g. -p steps=20 -p strength=0.3."),
    target_repo: str | None = typer.Option(None, "--target-repo", help="Deliver into this "
                                           "repo (a name from AAT_REPOS)."),
    target_path: str | None = typer.Option(None, "--target-path", help="Source path inside "
                                           "the repo."),
    naming: str | None = typer.Option(None, "--naming", help="suffix, replace or mirror."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key", help="Same key, "
                                               "same job."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Submit FILE as a job; with --wait show progress and write the result atomically."""
    with _client() as client:
        from service.cli.sheets import sheet_option, write_beside

        sheet_value, sheet_file = sheet_option(sheet, file)
        options = {"scale": scale, "width": width, "height": height, "upscaler": upscaler,
                   "prompt": prompt, "seam_fix": seam_fix, "tileable": tileable,
                   "asset_type": asset_type, "sheet": sheet_value, "matte": matte,
                   "target_repo": target_repo, "target_path": target_path, "naming": naming}
        if wait and output is not None:
            _check_output(output)  # before the job runs, not after
        job, created = client.submit(file, _query(options, param, lora), idempotency_key)
        _err.print(f"{'submitted' if created else 'already submitted'}: {job['id']} "
                   f"({job['status']}); watch it at {client.base_url}/jobs/{job['id']}",
                   highlight=False, soft_wrap=True)
        if not wait:
            _out.print(job["id"], highlight=False)
            return
        final = _follow(client, job, quiet)
        if final["status"] != "succeeded":
            err = final.get("error") or {}
            code = err.get("code", final["status"])
            message = err.get("message", f"the job ended {final['status']}")
            raise ApiCallError(message, code=code)
        data, ctype = client.result(job["id"])
        target = output or _default_output(file, final, ctype)
        from service.core.atomic import atomic_write

        atomic_write(target, data)
        _out.print(str(target), highlight=False)
        for warning in (final.get("output") or {}).get("warnings") or []:
            _err.print(f"warning: {warning}", markup=False, highlight=False)
        if sheet_file is not None:
            out = final["output"]
            factor = out["width"] // final["input"]["width"]
            written = write_beside(sheet_file, target, factor, max(out["width"], out["height"]))
            _out.print(str(written), highlight=False)


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise ApiCallError(f"output {output} is a folder; give a file name",
                           code="path_forbidden", status=400)
    if not output.parent.is_dir():
        raise ApiCallError(f"output folder {output.parent} does not exist; create it first",
                           code="path_not_found", status=400)


def _default_output(file: Path, job: dict[str, Any], ctype: str) -> Path:
    params = job.get("params") or {}
    out = job.get("output") or {}
    if params.get("scale") is not None:
        label = f"_x{float(params['scale']):g}"
    else:
        label = f"_{out.get('width')}x{out.get('height')}"
    fmt = formats.by_media_type(ctype)
    ext = fmt.suffix if fmt is not None else file.suffix
    return file.with_name(f"{file.stem}{label}{ext}")


def _follow(client: ApiClient, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Show a progress bar from the SSE stream; return the final job."""
    final = job
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=_err, disable=quiet, transient=False) as bar:
        task = bar.add_task(job.get("stage", "queued"), total=1.0)
        for _event, state in client.events(job["id"]):
            final = state
            bar.update(task, completed=float(state.get("progress", 0.0)),
                       description=str(state.get("stage", "")))
    return final


def jobs(
    status_filter: str | None = typer.Option(None, "--status", help="queued, running, "
                                             "succeeded, failed or canceled."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first."""
    with _client() as client:
        page = client.jobs(status_filter, limit)
    if as_json:
        _out.print_json(json.dumps(page))
        return
    # the id is what users copy into `aat status`/`aat cancel`: never shortened
    table = Table(Column("id", no_wrap=True, min_width=26),
                  Column("status", no_wrap=True, min_width=9), "stage", "progress", "file",
                  "created")
    for j in page["items"]:
        table.add_row(j["id"], j["status"], j["stage"], f"{100 * j['progress']:.0f}%",
                      j["input"]["filename"], j["created_at"][:19])
    _out.print(table)


def status(job_id: str = typer.Argument(..., help="Job id."),
           as_json: bool = typer.Option(False, "--json", help="Print the job as JSON.")) -> None:
    """Show one job."""
    with _client() as client:
        job = client.job(job_id)
    if as_json:
        _out.print_json(json.dumps(job))
        return
    _out.print(f"{job['id']}  {job['status']}  stage={job['stage']}  "
               f"{100 * job['progress']:.0f}%  {job['input']['filename']}", highlight=False)
    if job.get("output"):
        o = job["output"]
        where = o.get("delivered_path") or job["urls"].get("result", "")
        _out.print(f"output {o['width']}x{o['height']} {o['format']} via {o['upscaler']}/"
                   f"{o['backend']} -> {where}", highlight=False)
    if job.get("error"):
        _out.print(f"error [{job['error']['code']}]: {job['error']['message']}",
                   markup=False, highlight=False, soft_wrap=True)


def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job (queued jobs stop at once, running ones at the next tile)."""
    with _client() as client:
        job = client.cancel(job_id)
    _out.print(f"{job['id']}  {job['status']}", highlight=False)


@models_app.command("list")
def models_list() -> None:
    """List the LoRAs on the upscale worker's volume."""
    with _client() as client:
        found = client.models()
    table = Table("name", "size")
    for m in found:
        table.add_row(m["name"], f"{m['size_bytes'] / 1e6:.1f} MB")
    _out.print(table)


@models_app.command("upload")
def models_upload(file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                              help="A .safetensors LoRA.")) -> None:
    """Upload a LoRA (.safetensors only)."""
    with _client() as client:
        info = client.upload_model(file)
    _out.print(f"uploaded {info['name']} ({info['size_bytes']} bytes)", highlight=False)


@models_app.command("delete")
def models_delete(name: str = typer.Argument(..., help="LoRA file name.")) -> None:
    """Delete a LoRA from the worker's volume."""
    with _client() as client:
        client.delete_model(name)
    _out.print(f"deleted {name}", highlight=False)


def doctor(
    check: list[str] = typer.Option(
        [], "--check", help="Run only this check (repeatable): store, broker, runners, "
        "artifacts, gpu, api."),
    this_host: bool = typer.Option(False, "--this-host", help="runners: only the ones on this "
                                   "machine (a container's health check)."),
) -> None:
    """Check settings, store, broker, runners, artifact store, RunPod endpoints and the API;
    say what to fix."""
    from service.cli.doctor import CHECKS, run_checks

    unknown = sorted(set(check) - set(CHECKS))
    if unknown:
        typer.echo(f"error [invalid_params]: unknown check {', '.join(unknown)}; choose from "
                   f"{', '.join(CHECKS)}", err=True)
        raise typer.Exit(2)
    failed = 0
    for found in run_checks(check, this_host=this_host):
        mark = "[green]ok[/]" if found.ok else "[red]FAIL[/]"
        _out.print(f"{mark:>14}  {found.name:<10} {escape(found.detail)}", soft_wrap=True,
                   highlight=False)
        failed += not found.ok
    if failed:
        raise typer.Exit(1)
