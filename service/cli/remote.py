"""Client commands of `aat` that talk HTTP to the API at ``AAT_SERVER_URL``.

`aat submit FILE [--wait]`, `aat jobs`, `aat status ID`, `aat cancel ID`, `aat retry ID`,
`aat models list|upload|import|delete`, and `aat doctor` (checks settings, store, broker, RunPod
endpoints and the API, and says what to fix). They all go through the one REST client,
:class:`service.client.ServiceClient`, and raise on failure: the `aat` group prints the one
line and picks the exit status (:mod:`service.cli.errors`).

Module level imports only typer: `aat --help` must not load settings, pydantic or httpx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from service.cli.output import echo, progress_view, table

if TYPE_CHECKING:
    from service.client import JobPublic, ServiceClient

models_app = typer.Typer(help="LoRAs on the upscale worker's volume.", no_args_is_help=True,
                         rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    """Add the client commands and the `models` group to the `aat` app."""
    for name, fn in (("submit", submit), ("jobs", jobs), ("status", status),
                     ("cancel", cancel), ("retry", retry), ("doctor", doctor)):
        app.command(name)(fn)
    app.add_typer(models_app, name="models")


@contextmanager
def _client() -> Iterator[ServiceClient]:
    """The REST client for the settings' ``server_url`` and token."""
    from service.client import ServiceClient
    from service.settings import load_settings

    with ServiceClient.from_settings(load_settings()) as client:
        yield client


def _query(options: dict[str, Any], params: list[str], loras: list[str]) -> dict[str, str]:
    from service.core.errors import ParamsError

    query = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in options.items() if v is not None}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--param {item!r} is not KEY=VALUE")
        query[key.strip()] = value
    if loras:
        query["loras"] = ",".join(loras)
    return query


def shown_status(job: JobPublic) -> str:
    """The status a person should see: a running job asked to stop is ``canceling``."""
    if job.status.value == "running" and job.cancel_requested:
        return "canceling"
    return job.status.value


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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress."),
) -> None:
    """Submit FILE as a job to the running service.

    With --wait, show progress and write the result atomically.
    """
    from service.cli.sheets import sheet_option, write_beside
    from service.core.errors import AatError

    sheet_value, sheet_file = sheet_option(sheet, file)
    options = {"scale": scale, "width": width, "height": height, "upscaler": upscaler,
               "prompt": prompt, "seam_fix": seam_fix, "tileable": tileable,
               "asset_type": asset_type, "sheet": sheet_value, "matte": matte,
               "target_repo": target_repo, "target_path": target_path, "naming": naming}
    with _client() as client:
        if wait and output is not None:
            _check_output(output)  # before the job runs, not after
        job, created = client.submit_file(file, _query(options, param, lora), idempotency_key)
        echo(f"{'submitted' if created else 'already submitted'}: {job.id} "
             f"({job.status.value}); watch it at {client.base_url}/jobs/{job.id}", err=True)
        if not wait:
            echo(job.id)
            return
        final = _follow(client, job, quiet)
        if final.status.value != "succeeded":
            err = final.error
            raise AatError(err.message if err else f"the job ended {final.status.value}",
                           code=err.code if err else f"job_{final.status.value}")
        data, ctype = client.result(job.id)
    target = output or _default_output(file, final, ctype)
    from service.core.atomic import atomic_write

    atomic_write(target, data)
    echo(str(target))
    out = final.output
    for warning in (out.warnings if out else []):
        echo(f"warning: {warning}", err=True)
    if sheet_file is not None and out is not None:
        factor = out.width // final.input.width
        echo(str(write_beside(sheet_file, target, factor, max(out.width, out.height))))


def _check_output(output: Path) -> None:
    from service.core.errors import PathError

    if output.is_dir():
        raise PathError(f"output {output} is a folder; give a file name", code="path_forbidden")
    if not output.parent.is_dir():
        raise PathError(f"output folder {output.parent} does not exist; create it first",
                        code="path_not_found")


def _default_output(file: Path, job: JobPublic, ctype: str) -> Path:
    if job.params is not None and job.params.scale is not None:
        label = f"_x{float(job.params.scale):g}"
    else:
        out = job.output
        label = f"_{out.width}x{out.height}" if out else "_out"
    from service.core import formats

    fmt = formats.by_media_type(ctype)
    ext = fmt.suffix if fmt is not None else file.suffix
    return file.with_name(f"{file.stem}{label}{ext}")


def _follow(client: ServiceClient, job: JobPublic, quiet: bool) -> JobPublic:
    """Show the job's progress from the SSE stream (the stage that is running now); return
    the final job."""
    final = job
    with progress_view(quiet=quiet, total=1.0) as view:
        view.update(job.stage, job.progress)
        for _event, state in client.events(job.id):
            final = state
            label = "canceling" if shown_status(state) == "canceling" else state.stage
            view.update(label, state.progress)
    return final


def jobs(
    status_filter: str | None = typer.Option(None, "--status", help="queued, running, "
                                             "succeeded, failed or canceled."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=500),
    cursor: str | None = typer.Option(None, "--cursor", help="Start after this job id (the "
                                      "next_cursor of the previous page)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first."""
    with _client() as client:
        page = client.jobs(status_filter, limit, cursor)
    if as_json:
        echo(page.model_dump_json(indent=2))
        return
    rows = [[j.id, shown_status(j), j.stage, f"{100 * j.progress:.0f}%", j.input.filename,
             j.created_at.isoformat(timespec="seconds")[:19]] for j in page.items]
    table(["id", "status", "stage", "progress", "file", "created"], rows)
    if page.next_cursor:
        echo(f"more: aat jobs --cursor {page.next_cursor}", err=True)


def status(job_id: str = typer.Argument(..., help="Job id."),
           as_json: bool = typer.Option(False, "--json", help="Print the job as JSON.")) -> None:
    """Show one job."""
    with _client() as client:
        job = client.job(job_id)
    if as_json:
        echo(job.model_dump_json(indent=2))
        return
    echo(f"{job.id}  {shown_status(job)}  stage={job.stage}  {100 * job.progress:.0f}%  "
         f"{job.input.filename}")
    if job.output:
        o = job.output
        where = o.delivered_path or job.urls.get("result", "")
        echo(f"output {o.width}x{o.height} {o.format} via {o.upscaler}/{o.backend} -> {where}")
    if job.error:
        echo(f"error [{job.error.code}]: {job.error.message}")


def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job.

    Queued jobs stop at once, running ones at the next tile.
    """
    with _client() as client:
        job = client.cancel(job_id)
    echo(f"{job.id}  {shown_status(job)}")


def retry(job_id: str = typer.Argument(..., help="Job id of a failed or canceled job."),
          idempotency_key: str | None = typer.Option(None, "--idempotency-key",
                                                     help="Same key, same new job.")) -> None:
    """Retry a failed or canceled job as a new job.

    Same input, parameters, target and kind (upscale or animate); prints the new job's id.
    """
    with _client() as client:
        job, created = client.retry(job_id, idempotency_key)
    echo(f"{'retried as' if created else 'already retried as'}: {job.id} ({job.status.value}); "
         f"watch it at {client.base_url}/jobs/{job.id}", err=True)
    echo(job.id)


@models_app.command("list")
def models_list() -> None:
    """List the LoRAs on the upscale worker's volume."""
    with _client() as client:
        found = client.models()
    table(["name", "size"], [[m.name, f"{m.size_bytes / 1e6:.1f} MB"] for m in found])


@models_app.command("upload")
def models_upload(file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                              help="A .safetensors LoRA.")) -> None:
    """Upload a LoRA (.safetensors only)."""
    with _client() as client:
        info = client.upload_model(file)
    echo(f"uploaded {info.name} ({info.size_bytes} bytes)")


@models_app.command("import")
def models_import(
    url: str = typer.Argument(..., help="A CivitAI model page (its newest version is taken), "
                              "CivitAI model-version or Hugging Face file URL."),
    name: str | None = typer.Option(None, "--name", help="name.safetensors on the volume "
                                    "(default: the file's own name)."),
) -> None:
    """Have the upscale worker download a LoRA from CivitAI or Hugging Face, and follow it
    (Ctrl-C cancels the import)."""
    with _client() as client:
        item = client.import_model(url, name)
        shown = ""
        try:
            while item["state"] not in ("done", "failed", "canceled"):
                line = _import_line(item)
                if line != shown:
                    echo(line, err=True)
                    shown = line
                time.sleep(0.5)
                item = client.model_import(item["id"])
        except KeyboardInterrupt:
            item = client.cancel_model_import(item["id"])
    if item["state"] == "canceled":
        echo(f"canceled the import of {item.get('name') or item['url']}; nothing was kept",
             err=True)
        raise typer.Exit(130)
    if item["state"] == "failed":
        err = item["error"] or {}
        echo(f"error [{err.get('code', 'import_failed')}]: {err.get('message', '')}", err=True)
        raise typer.Exit(2 if not err.get("retryable") else 1)
    model = item["model"]
    words = ", ".join(model.get("trigger_words") or [])
    echo(f"imported {model['name']} ({model['size_bytes']} bytes)" + _version_text(item)
         + (f"; trigger words: {words}" if words else ""))


def _version_text(item: dict[str, Any]) -> str:
    """`` from CivitAI model version 108 (v3, SDXL 1.0; the model's newest)`` or nothing."""
    version = item.get("version")
    if not version:
        return ""
    about = [v for v in (version.get("name"), version.get("base_model")) if v]
    detail = ", ".join(about) + ("; the model's newest" if version.get("chosen") == "newest"
                                 else "")
    return f" from CivitAI model version {version['version_id']}" + (
        f" ({detail})" if detail else "")


def _import_line(item: dict[str, Any]) -> str:
    done, total = item.get("bytes_done") or 0, item.get("bytes_total")
    amount = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    return f"{item['state']}: {item.get('name') or item['url']} {amount}" + _version_text(item)


@models_app.command("delete")
def models_delete(name: str = typer.Argument(..., help="LoRA file name.")) -> None:
    """Delete a LoRA from the worker's volume."""
    with _client() as client:
        client.delete_model(name)
    echo(f"deleted {name}")


def doctor(
    check: list[str] = typer.Option(
        [], "--check", help="Run only this check (repeatable): store, broker, runners, "
        "artifacts, gpu, api."),
    this_host: bool = typer.Option(False, "--this-host", help="runners: only the ones on this "
                                   "machine (a container's health check)."),
) -> None:
    """Check the setup and say what to fix.

    Settings, job store, broker, runners, artifact store, RunPod endpoints and the API.
    """
    from service.cli.doctor import CHECKS, run_checks

    unknown = sorted(set(check) - set(CHECKS))
    if unknown:
        from service.core.errors import ParamsError

        raise ParamsError(f"unknown check {', '.join(unknown)}; choose from "
                          f"{', '.join(CHECKS)}")
    failed = 0
    for found in run_checks(check, this_host=this_host):
        echo(f"{'ok' if found.ok else 'FAIL':>4}  {found.name:<10} {found.detail}")
        failed += not found.ok
    if failed:
        raise typer.Exit(1)
