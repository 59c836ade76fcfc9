"""`aat upscale` and `aat upscalers`: upscale one image file locally, write it atomically.

The image goes through the same pipeline as a job (:mod:`service.pipeline`: prepare, then
caption → refine → seam fix → blend on the chosen GPU backend); backend ``none`` runs the base
upscale (best installed CPU upscaler, alpha kept) without a GPU refine. With the same input,
parameters and ``--seed``, `aat upscale --backend runpod` and a job give the same pixels.
Refined tiles and captions are cached in the data directory's artifact store, as a job's are,
so running the same command again after an interruption pays only for the tiles that were not
finished. On any failure: one line ``error [code]: message`` on stderr, the exit status of
:mod:`service.cli.errors`, and OUTPUT left exactly as it was (the file is written to a hidden
temp name in the same folder, fsynced and renamed into place only when complete). Progress goes
to stderr: a bar on a terminal, plain lines naming each step as it starts otherwise.

Module level imports only typer (`aat --help` stays cheap).
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from service.cli.output import ProgressView, echo, progress_view
from service.core import formats
from service.core.diffusion import DiffusionSettings

if TYPE_CHECKING:
    from service.backends.base import CallAccounting
    from service.cli.sheets import SheetFile
    from service.core.params import UpscaleParams

_KNOB = {name: field.default for name, field in DiffusionSettings.model_fields.items()}
_OPTION_NAMES = {"output_format": "--format", "parameters": "parameters"}
STAGES = ("read", "decode", "pre-upscale", "tiles", "encode", "write")


def register(app: typer.Typer) -> None:
    """Add `upscale` and `upscalers` to the `aat` app."""
    app.command("upscale")(upscale)
    app.command("upscalers")(upscalers)


def upscale(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Image to upscale "
                                      f"({formats.INPUT_NAMES})."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the result."),
    scale: float | None = typer.Option(None, "--scale", "-s", help="Scale factor, up to 8 "
                                       "(default 2 when no size is given)."),
    width: int | None = typer.Option(None, "--width", help="Output width in px."),
    height: int | None = typer.Option(None, "--height", help="Output height in px."),
    upscaler: str = typer.Option("auto", "--upscaler", help="auto, lanczos, nearest, anime4k, "
                                 "realesrgan or realesrgan-x4plus (see `aat upscalers`)."),
    tile_size: int = typer.Option(1024, "--tile-size", help="Tile size in output px."),
    overlap: int = typer.Option(128, "--overlap", help="Overlap between tiles in px."),
    seam_fix: str = typer.Option("none", "--seam-fix", help="none, band or offset."),
    colour_fix: str = typer.Option("wavelet", "--colour-fix", help="wavelet, adain or none: "
                                   "pull each refined tile's colour back to the base upscale "
                                   "(GPU backends)."),
    tileable: bool = typer.Option(False, "--tileable", help="Treat the input as a seamless "
                                  "texture: it stays seamless."),
    backend: str = typer.Option("none", "--backend", help="GPU backend for the diffusion "
                                "refine: none (base upscale only), runpod (RunPod serverless "
                                "endpoints from RUNPOD_* settings) or local (this machine's GPU)."),
    prompt: str = typer.Option(_KNOB["prompt"], "--prompt", help="Global style prompt (GPU "
                               "backends)."),
    negative_prompt: str = typer.Option(_KNOB["negative_prompt"], "--negative-prompt",
                                        help="Negative prompt."),
    strength: float = typer.Option(_KNOB["strength"], "--strength", help="Denoise strength 0-1."),
    steps: int = typer.Option(_KNOB["steps"], "--steps", help="Diffusion steps (1-100)."),
    cfg_scale: float = typer.Option(_KNOB["cfg_scale"], "--cfg", help="Classifier-free guidance "
                                    "scale."),
    seed: int | None = typer.Option(None, "--seed", help="Job seed; each tile derives its own "
                                    "(random when omitted, printed in the output metadata)."),
    lora: list[str] = typer.Option([], "--lora", help="LoRA as NAME or NAME:WEIGHT; repeat "
                                   "to stack."),
    caption: bool = typer.Option(True, "--caption/--no-caption", help="Caption each tile "
                                 "with the VLM and use it as the tile's prompt."),
    output_format: str = typer.Option("auto", "--format", help="auto (from OUTPUT's suffix: "
                                      f"{' '.join(formats.OUTPUT_SUFFIXES)}), png, webp, jpeg, "
                                      "tga or dds (BC1/BC3)."),
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="WebP/JPEG quality; "
                                "100 = lossless WebP."),
    asset_type: str = typer.Option("auto", "--asset-type", help="auto (from the file name and "
                                   "pixels), sprite, texture, ui, illustration, normal, mask or "
                                   "pixel_art; normal, mask and pixel_art never diffuse."),
    sheet: str | None = typer.Option(None, "--sheet", help="Process a spritesheet cell by "
                                     "cell: COLSxROWS, cell=WxH[,margin=N,spacing=N], or an "
                                     "Aseprite/TexturePacker .json, Godot .tres or Unity .meta "
                                     "file (its scaled copy is written beside OUTPUT)."),
    pixel_scaler: str = typer.Option("epx", "--pixel-scaler", help="pixel_art: epx or nearest."),
    diffusion: bool | None = typer.Option(None, "--diffusion/--no-diffusion", help="Override "
                                          "the asset type's choice (pixel art diffuses then "
                                          "keeps its palette)."),
    matte: str = typer.Option("#ffffff", "--matte", help="Background for transparency when "
                              "OUTPUT has no alpha (JPEG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Upscale one image file on this machine.

    Alpha is kept; OUTPUT is only written when everything worked.
    """
    from service.cli.errors import Interrupted
    from service.cli.sheets import sheet_option

    sheet_value, sheet_file = sheet_option(sheet, input_path)
    params = _params(asset_type=asset_type, sheet=sheet_value, pixel_scaler=pixel_scaler,
                     diffusion=diffusion, matte=matte, scale=scale, width=width, height=height, upscaler=upscaler,
                     tile_size=tile_size, overlap=overlap, seam_fix=seam_fix,
                     colour_fix=colour_fix, tileable=tileable, output_format=output_format,
                     prompt=prompt, negative_prompt=negative_prompt, strength=strength,
                     steps=steps, cfg_scale=cfg_scale, seed=seed, caption=caption,
                     loras=_loras(lora))
    try:
        with progress_view(quiet=quiet, total=len(STAGES), transient=True) as view:
            step = Step(view)
            summary = _run(input_path, output, params, backend, quality, step, sheet_file)
            step.done()
    except KeyboardInterrupt:
        raise Interrupted(f"stopped; {output} was not written") from None
    echo(summary)


def upscalers() -> None:
    """List the base upscalers and whether each can run here."""
    from service.upscalers.registry import AUTO_ORDER, describe  # noqa: PLC0415

    for name, ok, reason in describe():
        mark = "available" if ok else f"unavailable: {reason}"
        typer.echo(f"{name:<18} {mark}")
    ready = {name for name, ok, _ in describe() if ok}
    best = next((n for n in AUTO_ORDER if n in ready), "lanczos")
    typer.echo(f"auto -> {best}")


def _loras(specs: list[str]) -> list[dict[str, object]]:
    """``name`` or ``name:weight`` → LoRA dicts (weight 1.0 by default)."""
    from service.core.errors import ParamsError

    out: list[dict[str, object]] = []
    for spec in specs:
        name, _, weight = spec.rpartition(":") if ":" in spec else (spec, "", "1")
        try:
            out.append({"name": name, "weight": float(weight)})
        except ValueError:
            raise ParamsError(f"--lora {spec!r}: the weight after ':' must be a number") from None
    return out


def _params(**values: object) -> UpscaleParams:
    from pydantic import ValidationError

    from service.core.errors import ParamsError
    from service.core.params import UpscaleParams

    given = {k: v for k, v in values.items() if v is not None}
    try:
        return UpscaleParams(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "parameters"
        option = _OPTION_NAMES.get(where, "--" + where.replace("_", "-"))
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise ParamsError(f"{option}: {msg}") from exc


def _run(input_path: Path, output: Path, params: UpscaleParams, backend: str, quality: int,
         step: Step, sheet_file: SheetFile | None = None) -> str:
    """Read, upscale, encode and write; returns the one-line summary."""
    from service.backends.factory import make_backend  # noqa: PLC0415
    from service.cli.sheets import write_beside  # noqa: PLC0415
    from service.core.alpha import parse_matte  # noqa: PLC0415
    from service.core.errors import ParamsError
    from service.core.imaging import (  # noqa: PLC0415 - keep `aat --help` fast
        ALPHA_FORMATS,
        encode_image,
        load_image,
        matte_warning,
        output_format_for,
    )
    from service.pipeline.prepare import prepare  # noqa: PLC0415
    from service.pipeline.refine import MemoryCache  # noqa: PLC0415
    from service.pipeline.stages import run_stages, stage_plan  # noqa: PLC0415
    from service.settings import load_settings  # noqa: PLC0415
    from service.storage.stores import open_artifacts  # noqa: PLC0415
    from service.upscalers.base import tile_progress  # noqa: PLC0415
    from service.upscalers.registry import get_upscaler  # noqa: PLC0415

    _check_paths(input_path, output)
    requested = _format_of_output(output, params.output_format)
    if backend not in ("none", "local", "runpod"):
        raise ParamsError(f"unknown backend {backend!r}; use --backend none, runpod or local")
    settings = load_settings()
    if backend == "runpod":
        _check_runpod_settings(settings)
    limits = settings.image_limits()
    step("read")
    data = input_path.read_bytes()
    step("decode")
    image = load_image(data, limits=limits, filename=input_path.name)
    params = params.resolved_for(input_path.name, image.rgb, image.alpha)
    chosen = get_upscaler(params.upscaler)
    fmt = output_format_for(image.format, requested)
    step("pre-upscale")
    token = tile_progress.set(lambda done, total: step.detail(f"pre-upscale {done}/{total}"))
    try:
        prepared = prepare(image, params, chosen, limits=limits)
    finally:
        tile_progress.reset(token)
    step("tiles")
    plan = stage_plan(params, can_caption=settings.can_caption(backend))
    if backend != "none" and params.caption and not plan.runs("caption"):
        echo("warning: no RUNPOD_CAPTION_ENDPOINT_ID: tiles are refined without captions",
             err=True)
    gpu = make_backend(settings, backend) if backend != "none" and plan.diffuses else None
    seed = params.seed if params.seed is not None else secrets.randbits(32)
    report = _Report(step)
    # the job runners' tile cache, so a repeated command pays nothing; no GPU, nothing to keep
    cache = open_artifacts(settings) if gpu is not None else MemoryCache()
    rendered = run_stages(prepared, gpu, plan, seed=seed, observer=report, cache=cache)
    step("encode")
    meta = {"upscaler": rendered.model, "backend": backend, "size":
            f"{prepared.width}x{prepared.height}"}
    if gpu is not None:
        meta["seed"] = str(seed)
    encoded = encode_image(rendered.rgb, rendered.alpha, fmt, quality=quality, metadata=meta,
                           matte=parse_matte(params.matte), dds_format=image.pixel_format)
    step("write")
    _write(output, encoded)
    matte = matte_warning(fmt, rendered.alpha, params.matte)
    for note in [*rendered.warnings, *([matte] if matte else [])]:
        echo(f"warning: {note}", err=True)
    if sheet_file is not None:
        written = write_beside(sheet_file, output, prepared.width // image.width,
                               max(prepared.width, prepared.height))
        echo(f"wrote {written} (sheet metadata, scaled)", err=True)
    alpha = "with alpha" if rendered.alpha is not None and fmt in ALPHA_FORMATS else "no alpha"
    gpu_note = f", seed {seed}{report.summary()}" if gpu is not None else ""
    return (f"wrote {output} ({prepared.width}x{prepared.height} {fmt}, {alpha}, "
            f"{params.asset_type} ({params.asset_reason}), upscaler {rendered.model}{gpu_note})")


def _format_of_output(output: Path, requested: str) -> str:
    """The format the ``-o`` name asks for; a suffix we cannot write, or one that contradicts
    ``--format``, is refused (the bytes would not be what the name says)."""
    from service.core.errors import ParamsError  # noqa: PLC0415

    known = ", ".join(formats.OUTPUT_SUFFIXES)
    named = formats.by_suffix(output.suffix)
    if named is None or not named.writable:
        what = f"{output.suffix} files" if output.suffix else "a file without a suffix"
        raise ParamsError(f"cannot write {what}; name the output with one of {known}")
    if requested not in ("auto", named.name):
        raise ParamsError(f"--format {requested} does not match the output name {output.name}; "
                          f"name it {output.stem}{formats.suffix_for(requested)} or drop --format")
    return named.name


def _check_runpod_settings(settings: object) -> None:
    from service.core.errors import ConfigError

    missing = [env for env, value in (
        ("RUNPOD_API_KEY", getattr(settings, "runpod_api_key", None)),
        ("RUNPOD_UPSCALE_ENDPOINT_ID", getattr(settings, "runpod_upscale_endpoint_id", None)),
    ) if not value]
    if missing:
        raise ConfigError(f"--backend runpod needs {' and '.join(missing)}; set them in the "
                          "environment or in aat.toml (see docs/guide/deploy-runpod.md)")


def _check_paths(input_path: Path, output: Path) -> None:
    from service.core.errors import PathError

    if not input_path.is_file():
        raise PathError(f"input {input_path} does not exist or is not a file",
                        code="path_not_found")
    if not output.parent.is_dir():
        raise PathError(f"output folder {output.parent} does not exist; create it first",
                        code="path_not_found")
    if output.is_dir():
        raise PathError(f"output {output} is a folder; give a file name", code="path_forbidden")


def _write(output: Path, encoded: bytes) -> None:
    from service.core.atomic import atomic_write
    from service.core.errors import DeliveryError

    try:
        atomic_write(output, encoded)
    except OSError as exc:
        raise DeliveryError(f"could not write {output}: {exc.strerror or exc}; check the "
                            "folder's permissions and free space", retryable=False) from exc


class _Report:
    """What `aat upscale` hears from the pipeline (a ``PipelineObserver``): each stage's tile
    count on the progress bar, and the tiles taken from the cache, RunPod jobs and cost summed
    for the summary line (a job records the same sums in its row)."""

    def __init__(self, step: Step) -> None:
        self._step = step
        self._lock = threading.Lock()
        self._stages: dict[str, list[int]] = {}  # name -> [done, total]
        self.cached = self.remote_jobs = 0
        self.cost_usd = 0.0

    def stage(self, name: str, done: int, total: int, *, concurrent: bool = False) -> None:
        with self._lock:
            self._stages[name] = [done, total]
        self._show(name)

    def tile_started(self, stage: str, index: int) -> None:
        return None  # the bar counts finished tiles

    def captioned(self, index: int, caption: str, cost: CallAccounting | None) -> None:
        self._count("caption", cost)

    def refined(self, stage: str, index: int, key: str, seed: int,
                cost: CallAccounting | None) -> None:
        self._count(stage, cost)

    def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
        return None  # a run that stops cancels its remote jobs; finished tiles are cached

    def reused(self, stage: str, index: int, cost: CallAccounting) -> None:
        return None  # paid for by the run that cached it: this run's summary leaves it out

    def check(self) -> None:
        return None  # Ctrl-C stops the run

    def summary(self) -> str:
        """e.g. ``, 4 tiles from the cache, 12 RunPod jobs ~$0.0123`` (parts that are zero are
        left out)."""
        parts = []
        if self.cached:
            parts.append(f"{self.cached} tiles from the cache")
        if self.remote_jobs:
            parts.append(f"{self.remote_jobs} RunPod jobs ~${self.cost_usd:.4f}")
        return "".join(", " + part for part in parts)

    def _count(self, stage: str, cost: CallAccounting | None) -> None:
        with self._lock:
            counts = self._stages.setdefault(stage, [0, 0])
            counts[0] += 1
            if cost is None:
                self.cached += stage != "caption"
            else:
                self.remote_jobs += len(cost.remote_job_ids)
                self.cost_usd += cost.cost_usd
        self._show(stage)

    def _show(self, stage: str) -> None:
        done, total = self._stages.get(stage, [0, 0])
        self._step.detail(f"{stage} {done}/{total}" if total else stage)


class Step:
    """Progress of `aat upscale`: each call names the step that starts now, with the share of
    steps finished before it (``decode`` at 1/6: ``read`` is done); :meth:`detail` relabels
    the running step (``refine 3/16``) without moving it."""

    def __init__(self, view: ProgressView) -> None:
        self._view = view
        self._current = STAGES[0]

    def __call__(self, stage: str) -> None:
        self._current = stage
        self._view.update(stage, STAGES.index(stage))

    def detail(self, description: str) -> None:
        self._view.update(description, STAGES.index(self._current))

    def done(self) -> None:
        self._view.update("done", len(STAGES))
