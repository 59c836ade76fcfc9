"""Run one claimed job, stage by stage, writing progress as it goes.

load → pre-upscale → plan → caption (optional) → refine (concurrent, via the backend) → blend →
seam fix (optional) → colour fix → alpha → encode → deliver. Colour fix, blend and (for PNG)
encode run per tile as tiles arrive, behind the tiles still in flight (see ``_render``). The
image maths lives in ``service.render``; the GPU loop in ``service.jobs.refine``. Cancellation (and a lost lease or a
stopping runner) is checked between stages and while tiles are in flight. Any failure raises
before delivery, so a failed job writes nothing into the repo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from service.backends.base import GpuBackend, RefineOptions, RefineResult
from service.core.errors import JobCanceled, ParamsError
from service.core.imaging import encode_image, load_image, output_format_for
from service.core.jobs import JobStatus, TargetSpec
from service.core.params import UpscaleParams
from service.core.pngstream import PngStream
from service.jobs.intake import EXT_FOR_FORMAT, limits_for, naming_label
from service.jobs.pre_cache import cached_upscaler
from service.jobs.refine import After, Resume, TileWork, caption_one, derive_seed, refine_tiles
from service.jobs.runner import Interrupted, RunContext
from service.jobs.view import job_params, overall_progress
from service.render import Assembly, Prepared, Rendered, finish, fix_tile, prepare
from service.storage.game_repo import SidecarSpec, deliver
from service.storage.job_store import JobRow, LeaseLost
from service.upscalers.registry import get_upscaler

log = logging.getLogger(__name__)


class JobRun:
    """Progress writes and stop checks for one job, fenced by the runner's lease."""

    def __init__(self, ctx: RunContext, job_id: str, owner: str, lost: threading.Event) -> None:
        self.ctx, self.job_id, self.owner, self.lost = ctx, job_id, owner, lost
        self.started = self._stage_started = time.monotonic()
        self.closers: list[Callable[[], Awaitable[None]]] = []

    def owned(self) -> JobRow:
        """The job row, or LeaseLost when this runner no longer owns it."""
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id} lease lost")
        row = self.ctx.store.get(self.job_id)
        if row.owner != self.owner or row.status != JobStatus.running:
            raise LeaseLost(f"job {self.job_id} is no longer owned by this runner")
        return row

    def check(self) -> JobRow:
        """:meth:`owned`, and stop here when the job was canceled or the runner is stopping."""
        row = self.owned()
        if row.cancel_requested:
            raise JobCanceled(f"job {self.job_id} was canceled")
        if self.ctx.stopping.is_set():
            raise Interrupted("the runner is stopping; the job goes back to the queue")
        return row

    async def acheck(self) -> None:
        await asyncio.to_thread(self.check)

    def stage(self, name: str, done: int = 0, total: int = 1, *, finish_previous: bool = True,
              **extra: Any) -> None:
        now = time.monotonic()
        elapsed, self._stage_started = now - self._stage_started, now

        def fn(row: JobRow) -> dict[str, Any]:
            stages, timings = dict(row.stages or {}), dict(row.timings or {})
            previous = stages.get(row.stage)
            if previous and row.stage != name and finish_previous:  # the previous one ended
                stages[row.stage] = {"done": previous["total"], "total": previous["total"]}
                timings[row.stage] = round(timings.get(row.stage, 0.0) + elapsed, 3)
            stages[name] = {"done": done, "total": total}
            return {"stage": name, "stages": stages, "timings": timings,
                    "progress": overall_progress(stages, False), **extra}

        self.ctx.store.mutate(self.job_id, fn, owner=self.owner)

    def tile_done(self, stage: str, total: int, acct: Any | None) -> None:
        def fn(row: JobRow) -> dict[str, Any]:
            stages = dict(row.stages or {})
            st = stages.get(stage, {"done": 0, "total": total})
            stages[stage] = {"done": min(total, st["done"] + 1), "total": total}
            changes: dict[str, Any] = {"stages": stages,
                                       "progress": overall_progress(stages, False)}
            if acct is not None:
                changes.update(cost_runpod_jobs=row.cost_runpod_jobs + len(acct.remote_job_ids),
                               cost_execution_s=row.cost_execution_s + acct.execution_ms / 1000,
                               cost_usd=row.cost_usd + acct.cost_usd)
            return changes

        self.ctx.store.mutate(self.job_id, fn, owner=self.owner)

    def remote_submitted(self, index: int, key: str, remote_id: str, kind: str) -> None:
        if kind == "refine":  # remember which request the id belongs to, for resuming
            self.ctx.store.update_tile(self.job_id, index, remote_job_id=remote_id, cache_key=key)
        self.ctx.store.mutate(self.job_id, lambda row: {"remote_jobs": [
            *(row.remote_jobs or []), {"tile": index, "kind": kind, "id": remote_id}]},
            owner=self.owner)


def make_backend(ctx: RunContext) -> GpuBackend | None:
    """The configured GPU backend, or None (backend ``none``: base upscale only)."""
    name = ctx.settings.effective_backend
    if name == "runpod":
        from service.backends.runpod import RunPodBackend

        return RunPodBackend(ctx.settings)  # type: ignore[return-value]
    if name == "local":
        from service.backends.local import LocalBackend

        return LocalBackend(ctx.settings)  # type: ignore[return-value]
    return None


def refine_options(params: UpscaleParams, style: np.ndarray | None = None) -> RefineOptions:
    """Job-wide diffusion settings; ``style`` is the IP-Adapter image, if any."""
    return RefineOptions(
        ip_adapter_image=style,
        prompt=params.prompt, negative_prompt=params.negative_prompt, strength=params.strength,
        steps=params.steps, cfg_scale=params.cfg_scale, scheduler=params.scheduler,
        clip_skip=params.clip_skip, controlnet_scale=params.controlnet_scale,
        ip_adapter_scale=params.ip_adapter_scale, loras=tuple(params.loras))


def run_job(ctx: RunContext, job_id: str, owner: str, *, lost: threading.Event) -> None:
    """Run a job this runner has claimed (see module docstring)."""
    run = JobRun(ctx, job_id, owner, lost)
    row = run.check()
    params = job_params(row)
    limits = limits_for(ctx.settings)
    run.stage("load")
    data = ctx.artifacts.get_bytes("inputs", row.input_sha256, row.input_ext)
    image = load_image(data, limits=limits, filename=row.filename)
    run.stage("pre_upscale")
    upscaler = cached_upscaler(get_upscaler(params.upscaler), ctx.artifacts)
    prepared = prepare(image, params, upscaler, limits=limits)
    run.stage("plan")
    ctx.store.put_tiles(job_id, [{"idx": i, "x": t.x, "y": t.y, "w": t.w, "h": t.h}
                                 for i, t in enumerate(prepared.plan.tiles)])
    run.check()
    backend = make_backend(ctx)
    fmt = output_format_for(image.format, params.output_format)
    ext = EXT_FOR_FORMAT[fmt]
    meta = {"upscaler": prepared.model,  # no job id: same pixels, same bytes
            "backend": backend.name if backend else "none"}
    rendered, out = _render(run, backend, prepared, row, fmt, meta)
    sha = ctx.artifacts.put_bytes("outputs", out, ext)
    output: dict[str, Any] = {
        "width": prepared.width, "height": prepared.height, "format": fmt, "sha256": sha,
        "upscaler": rendered.upscaler, "backend": backend.name if backend else "none"}
    run.stage("deliver")
    run.check()  # last chance to cancel: nothing has been written into a repo yet
    if row.target:
        target = TargetSpec.model_validate(row.target)
        done = deliver(ctx.settings, target, out, ext=ext, job_id=job_id,
                       label=naming_label(params, row.input_width, row.input_height),
                       last_delivered=lambda rel: ctx.store.last_delivery(target.repo, rel),
                       input_sha256=row.input_sha256,
                       sidecars=SidecarSpec(factor=prepared.width / row.input_width,
                                            max_side=max(prepared.width, prepared.height),
                                            keep_game_size=params.keep_game_size))
        ctx.store.record_delivery(target.repo, done.rel, sha, job_id)
        output["delivered_path"] = done.rel
        if done.sidecars is not None:
            output.update(notes=done.sidecars.notes, sidecars=done.sidecars.written,
                          lfs=done.sidecars.lfs)
    last = run.owned()  # once the result is in the repo, a late cancel cannot undo it
    stages = {k: {"done": v["total"], "total": v["total"]} for k, v in last.stages.items()}
    timings = {**last.timings, "deliver": round(time.monotonic() - run._stage_started, 3),
               "total": round(time.monotonic() - run.started, 3)}
    ctx.store.transition(job_id, JobStatus.succeeded, owner=owner, output=output, stages=stages,
                         output_sha256=sha, output_ext=ext, stage="done", progress=1.0,
                         timings=timings)
    log.info("job %s succeeded (%dx%d %s)", job_id, prepared.width, prepared.height, fmt)


def _render(run: JobRun, backend: GpuBackend | None, prepared: Prepared, row: JobRow,
            fmt: str, meta: dict[str, str]) -> tuple[Rendered, bytes]:
    """GPU stages, blend, colour fix, alpha and encode. Each tile is colour-fixed as it arrives;
    for 8-bit PNG outputs without seam fix the tiles are also blended and the rows compressed
    as they arrive (:class:`~service.render.Assembly`), so little is left after the last tile."""
    params, level = prepared.params, run.ctx.settings.png_compress_level
    stream = _png_stream(prepared, fmt, meta, level) if backend is not None else None
    assembly = Assembly(prepared, stream.add) if stream is not None else None
    try:
        refined: dict[int, np.ndarray] = {}
        seam: dict[int, np.ndarray] = {}
        if backend is not None:
            refined, seam = asyncio.run(_gpu(run, backend, prepared, row,
                                                _after(prepared, assembly)))
        run.stage("blend")
        if assembly is None:
            rendered = finish(prepared, refined, params, seam_refined=seam, colour_fixed=True)
        else:
            assembly.fill_missing(refined)
            rendered = assembly.wait()
    except BaseException:
        if assembly is not None:
            assembly.abort()
        raise
    run.stage("encode")
    if stream is not None:
        return rendered, stream.finish()
    return rendered, encode_image(rendered.rgb, rendered.alpha, fmt, metadata=meta,
                                  compress_level=level)


def _png_stream(prepared: Prepared, fmt: str, meta: dict[str, str], level: int
                ) -> PngStream | None:
    if fmt != "png" or prepared.base.dtype != np.uint8 or not Assembly.supports(prepared):
        return None
    return PngStream(prepared.width, prepared.height, 3 if prepared.alpha is None else 4,
                     metadata=meta, compress_level=level)


def _after(prepared: Prepared, assembly: Assembly | None) -> After | None:
    """What happens to each refined tile as it arrives, while other tiles are in flight: it goes
    to the assembly (whose thread colour-fixes and blends it), or else its colour fix against
    the reference under it runs in a worker thread."""
    if assembly is not None:
        def put(index: int, tile: np.ndarray) -> np.ndarray:
            assembly.put(index, tile)
            return tile

        return put
    if prepared.params.colour_fix == "none":
        return None
    return lambda index, tile: fix_tile(prepared, index, tile)


async def _gpu(run: JobRun, backend: GpuBackend, prepared: Prepared, row: JobRow,
               after: After | None) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    try:
        return await _gpu_stages(run, backend, prepared, prepared.params, row, after)
    finally:
        for close in (*run.closers, backend.aclose):
            await close()


async def _gpu_stages(run: JobRun, backend: GpuBackend, prepared: Prepared,
                      params: UpscaleParams, row: JobRow, after: After | None
                      ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Caption → refine per tile, pipelined: a tile is refined as soon as its caption is in."""
    store, job_id = run.ctx.store, run.job_id
    rows = store.get_tiles(job_id)
    n = len(rows)
    inputs = {r["idx"]: prepared.tile(r["idx"]) for r in rows}
    captions = {r["idx"]: r["caption"] for r in rows if r["caption"]}
    user_prompts = {r["idx"]: r["prompt"] for r in rows if r["prompt"]}
    want = params.caption and run.ctx.settings.can_caption(run.ctx.settings.effective_backend)
    if want:
        run.stage("caption", len(captions), n)
    run.stage("refine", 0, n, finish_previous=False)

    async def caption_first(item: TileWork) -> TileWork:
        if not want or item.index in user_prompts or item.index in captions:
            return item
        text, res = await caption_one(backend, item.index, item.image, run.ctx.artifacts)
        await asyncio.to_thread(store.update_tile, job_id, item.index, caption=text)
        await asyncio.to_thread(run.tile_done, "caption", n, res.accounting if res else None)
        return dataclasses.replace(item, prompt=text)

    def refined_one(i: int, key: str, res: RefineResult | None) -> None:
        store.update_tile(job_id, i, status="refined", cache_key=key, seed=seeds[i])
        run.tile_done("refine", n, res.accounting if res else None)

    seeds = {r["idx"]: derive_seed(int(row.seed or 0), r["idx"], r["rerun"]) for r in rows}
    work = [TileWork(i, inputs[i], user_prompts.get(i) or captions.get(i, ""), seeds[i])
            for i in sorted(inputs)]
    options = refine_options(params, _style_image(run, params))
    refined = await refine_tiles(
        backend, work, options, run.ctx.artifacts, before=caption_first,
        on_submitted=lambda i, key, rid: run.remote_submitted(i, key, rid, "refine"),
        on_done=refined_one, resume=_resumer(run, rows, inputs), after=after,
        check=run.acheck)
    seam = await _seam_fix(run, backend, prepared, params, refined, options, int(row.seed or 0))
    return refined, seam


def _style_image(run: JobRun, params: UpscaleParams) -> np.ndarray | None:
    if not params.style_image_sha256 or params.ip_adapter_scale <= 0:
        return None
    path = run.ctx.artifacts.find("inputs", params.style_image_sha256)
    if path is None:
        raise ParamsError("the job's style image is gone (garbage-collected?); upload it again")
    loaded = load_image(path.read_bytes(), limits=limits_for(run.ctx.settings))
    return loaded.rgb if loaded.rgb.dtype == np.uint8 else (loaded.rgb >> 8).astype(np.uint8)


def _resumer(run: JobRun, rows: list[dict[str, Any]], inputs: dict[int, np.ndarray]
             ) -> Resume | None:
    """Re-poll RunPod jobs a killed attempt submitted for the same request (same key)."""
    pending = {r["idx"]: (r["cache_key"], r["remote_job_id"]) for r in rows
               if r["remote_job_id"] and r["status"] != "refined"}
    if run.ctx.settings.effective_backend != "runpod" or not pending:
        return None
    from service.jobs.resume import RunPodResumer

    resumer = RunPodResumer(run.ctx.settings)
    run.closers.append(resumer.aclose)

    async def resume(index: int, key: str) -> RefineResult | None:
        known_key, remote_id = pending.get(index, (None, None))
        if known_key != key or not remote_id:
            return None
        found = await resumer(remote_id, inputs[index].shape)
        if found is None:
            return None
        return RefineResult(str(index), found[0], -1, found[1])

    return resume


async def _seam_fix(run: JobRun, backend: GpuBackend, prepared: Prepared,
                    params: UpscaleParams, refined: dict[int, np.ndarray],
                    options: RefineOptions, seed: int) -> dict[int, np.ndarray]:
    plan = prepared.seam_fix_plan()
    if plan is None or not plan.tiles:
        return {}
    no_seam = dataclasses.replace(prepared, params=params.model_copy(update={"seam_fix": "none"}))
    blended = await asyncio.to_thread(
        lambda: finish(no_seam, refined, no_seam.params, colour_fixed=True).rgb)
    n = len(plan.tiles)
    run.stage("seam_fix", 0, n)
    seam_options = dataclasses.replace(options, strength=params.seam_fix_strength)
    work = [TileWork(i, prepared.seam_tile(blended, i), "", derive_seed(seed, 100_000 + i))
            for i, t in enumerate(plan.tiles)]
    return await refine_tiles(
        backend, work, seam_options, run.ctx.artifacts,
        on_done=lambda _i, _k, res: run.tile_done("seam_fix", n, res.accounting if res else None),
        check=run.acheck)
