"""Run one claimed job, stage by stage, writing progress as it goes.

load → pre-upscale → plan → the pipeline's stages (caption → refine → seam fix → blend, see
:mod:`service.pipeline.stages`) → encode → deliver. Colour fix, blend and (for PNG) encode run
per tile as tiles arrive, behind the tiles still in flight. The image work lives in
:mod:`service.pipeline`; this module owns the job's side of it: :class:`JobRun` is the
pipeline's observer, writing progress, tile records, RunPod job ids (for resuming) and cost into
the job row, and stopping the pipeline when the job is canceled, its lease is lost or the runner
is stopping. Any failure raises before delivery, so a failed job writes nothing into the repo.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Unpack

import numpy as np

from service.backends.base import CallAccounting
from service.backends.factory import make_backend
from service.core import formats
from service.core.alpha import parse_matte
from service.core.errors import InputMissing, JobCanceled, ParamsError
from service.core.imaging import encode_image, load_image, matte_warning, output_format_for
from service.core.jobs import JobStatus, TargetSpec, stage_name
from service.core.naming import size_tag
from service.core.params import UpscaleParams
from service.core.pngstream import PngStream
from service.jobs.animation import run_animation
from service.jobs.context import Interrupted, RunContext
from service.jobs.view import job_params, overall_progress
from service.pipeline.pre_cache import cached_upscaler
from service.pipeline.prepare import Prepared, prepare
from service.pipeline.refine import RemoteRecord
from service.pipeline.stages import TileMemory, run_stages, stage_plan, streams
from service.storage.game_repo import SidecarSpec, deliver
from service.storage.job_store import LeaseLost
from service.storage.records import (
    JobRecord,
    JobUpdate,
    NewTile,
    RemoteJob,
    StageCount,
    TileUpdate,
    held_result,
)
from service.upscalers.registry import get_upscaler

log = logging.getLogger(__name__)


class JobRun:
    """Progress writes and stop checks for one job, fenced by the runner's lease."""

    def __init__(self, ctx: RunContext, job_id: str, owner: str, lost: threading.Event) -> None:
        self.ctx, self.job_id, self.owner, self.lost = ctx, job_id, owner, lost
        self.started = self._stage_started = time.monotonic()
        self._tile_started: dict[tuple[str, int], float] = {}  # (stage, tile) -> monotonic

    def owned(self) -> JobRecord:
        """The job row, or LeaseLost when this runner no longer owns it."""
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id} lease lost")
        return self.ctx.store.owned(self.job_id, self.owner)

    def checked(self) -> JobRecord:
        """:meth:`owned`, and stop here when the job was canceled or the runner is stopping."""
        row = self.owned()
        if row.cancel_requested:
            raise JobCanceled(f"job {self.job_id} was canceled")
        if self.ctx.stopping.is_set():
            raise Interrupted("the runner is stopping; the job goes back to the queue")
        return row

    def check(self) -> None:
        """:meth:`checked` without the row (the observer's stop check)."""
        self.checked()

    def stage(self, name: str, done: int = 0, total: int = 1, *,
              concurrent: bool = False) -> None:
        """Stage ``name`` starts; the previous one ends unless it runs ``concurrent``ly."""
        stage = stage_name(name)
        now = time.monotonic()
        elapsed, self._stage_started = now - self._stage_started, now

        def fn(row: JobRecord) -> JobUpdate:
            stages, timings = dict(row.stages), dict(row.timings)
            previous = stages.get(row.stage)
            if previous and row.stage != name and not concurrent:  # the previous one ended
                stages[row.stage] = {"done": previous["total"], "total": previous["total"]}
                timings[row.stage] = round(timings.get(row.stage, 0.0) + elapsed, 3)
            stages[name] = {"done": done, "total": total}
            return {"stage": stage, "stages": stages, "timings": timings,
                    "progress": overall_progress(stages, False)}

        self.ctx.store.mutate(self.job_id, fn, owner=self.owner)

    def tile(self, index: int, **changes: Unpack[TileUpdate]) -> None:
        """Write tile (or frame) ``index``'s row, fenced by this runner's lease like every
        progress write: a runner that lost the job writes nothing more into it."""
        self.ctx.store.update_tile(self.job_id, index, owner=self.owner, **changes)

    # ---- PipelineObserver (service.pipeline.observer), called from worker threads ----------

    def submitted(self, stage: str, index: int, key: str, remote_id: str) -> None:
        """Every RunPod job the job causes is recorded, and counted, the moment it exists, so a
        crash before the tile finishes neither loses its cost nor pays for it twice (a resumed
        attempt picks the job up by this id: a refine through the tile row, a caption through
        ``remote_jobs``, which keeps the request key)."""
        if stage in ("refine", "animate"):  # which request the id belongs to, for resuming
            self.tile(index, remote_job_id=remote_id, cache_key=key)

        def fn(row: JobRecord) -> JobUpdate | None:
            if any(r["id"] == remote_id for r in row.remote_jobs):
                return None
            entry: RemoteJob = {"tile": index, "kind": stage, "id": remote_id, "key": key}
            return {"remote_jobs": [*row.remote_jobs, entry],
                    "cost_runpod_jobs": row.cost_runpod_jobs + 1}

        self.ctx.store.mutate(self.job_id, fn, owner=self.owner)

    def tile_started(self, stage: str, index: int) -> None:
        """Show the tile as captioning/refining and wake the job's event streams (a seam-fix
        tile has no row)."""
        if stage == "seam_fix":
            return
        self._tile_started[(stage, index)] = time.monotonic()
        self.tile(index, status="captioning" if stage == "caption" else "refining")
        self.ctx.store.mutate(self.job_id, lambda _row: {}, owner=self.owner)

    def _tile_timings(self, stage: str, index: int, cost: CallAccounting | None
                      ) -> dict[str, float]:
        """What tile ``index`` spent in ``stage``: wall seconds since it started (queueing on
        the GPU endpoint included) and the GPU seconds billed. None from the cache."""
        started = self._tile_started.pop((stage, index), None)
        if cost is None or started is None:
            return {}
        return {stage: round(time.monotonic() - started, 3),
                f"{stage}_gpu": round(cost.execution_ms / 1000, 3)}

    def captioned(self, index: int, caption: str, cost: CallAccounting | None) -> None:
        changes: TileUpdate = {"caption": caption}
        if timings := self._tile_timings("caption", index, cost):
            changes["timings"] = timings
        self._tile_done("caption", cost, index)  # first: a caption on its row has its cost
        self.tile(index, **changes)

    def refined(self, stage: str, index: int, key: str, seed: int,
                cost: CallAccounting | None) -> None:
        """Tile ``index`` of ``stage`` (or, stage ``animate``, frame ``index``) is in, cached
        under ``key`` with ``seed``: its row holds that result, ``refined`` when this job made
        it, ``cached`` when it came from the cache (``cost`` None: a rerun's kept tile or
        frame, or one an earlier run made), and one more unit of ``stage`` is done at its
        cost. A seam-fix tile has no row."""
        if stage in ("refine", "animate"):
            changes: TileUpdate = {"cache_key": key, "seed": seed,
                                   "status": "refined" if cost is not None else "cached"}
            if timings := self._tile_timings(stage, index, cost):
                changes["timings"] = timings
            self.tile(index, **changes)
        self._tile_done(stage, cost, index)

    def spent(self, stage: str, index: int, acct: CallAccounting) -> None:
        """What a call that did not finish its unit cost (a failed or cancelled frame)."""
        self._tile_done(stage, acct, index, count=False)

    def reused(self, stage: str, index: int, acct: CallAccounting) -> None:
        """Tile (or frame) ``index`` of ``stage`` was taken from the cache, and ``acct`` is what
        the call that made it cost (kept beside it, :func:`~service.pipeline.refine.keep_spent`).
        Counted here when that call was this job's own and its cost is not counted yet: the
        attempt that paid for it lost its lease (or was killed) between caching the result and
        counting it. A result another job paid for (a rerun's kept tiles) costs nothing here."""
        self.ctx.store.mutate(
            self.job_id, lambda row: _charge(row, acct, stage, index, reused=True) or None,
            owner=self.owner)

    def _tile_done(self, stage: str, acct: CallAccounting | None, index: int = -1, *,
                   count: bool = True) -> None:
        """One more unit of ``stage`` done (unless not ``count``), and what it cost
        (:func:`_charge`), in one write."""
        def fn(row: JobRecord) -> JobUpdate:
            stages = dict(row.stages)
            st = stages.get(stage, {"done": 0, "total": 1})
            done = min(st["total"], st["done"] + 1) if count else st["done"]
            stages[stage] = {"done": done, "total": st["total"]}
            changes: JobUpdate = {"stages": stages, "progress": overall_progress(stages, False)}
            if acct is not None:
                changes.update(_charge(row, acct, stage, index))
            return changes

        self.ctx.store.mutate(self.job_id, fn, owner=self.owner)


def _charge(row: JobRecord, acct: CallAccounting, stage: str, index: int, *,
            reused: bool = False) -> JobUpdate:
    """What the call ``acct`` made for tile ``index`` of ``stage`` adds to the job's cost,
    exactly once: each ``remote_jobs`` entry lists the tiles whose share of that RunPod job's
    cost is counted (``costed``; a shared job carries several tiles), and a call already
    counted for this tile adds nothing. RunPod jobs are counted when submitted
    (:meth:`JobRun.submitted`); one whose record had not been written is counted here
    instead, never twice. ``reused`` (a result from the cache, :meth:`JobRun.reused`): counted
    only when every RunPod job of the call is this job's own."""
    ids = list(dict.fromkeys(acct.remote_job_ids))
    entries = {r["id"]: r for r in row.remote_jobs if r["id"]}
    if any(rid in entries and index in entries[rid].get("costed", []) for rid in ids):
        return {}  # counted already
    if reused and (not ids or any(rid not in entries for rid in ids)):
        return {}  # another job's call, or one that tells no RunPod job
    missed = [RemoteJob(tile=index, kind=stage, id=rid, costed=[index])
              for rid in ids if rid not in entries]
    unsure = [RemoteJob(tile=index, kind=stage, id="", ambiguous=True)
              for _ in range(acct.possibly_billed)]
    costed = [RemoteJob(**{**r, "costed": [*r.get("costed", []), index]})
              if r["id"] in ids else r for r in row.remote_jobs]
    return {"remote_jobs": [*costed, *missed, *unsure],
            "cost_runpod_jobs": row.cost_runpod_jobs + len(missed),
            "cost_execution_s": row.cost_execution_s + acct.execution_ms / 1000,
            "cost_usd": row.cost_usd + acct.cost_usd}


def run_job(ctx: RunContext, job_id: str, owner: str, *, lost: threading.Event) -> None:
    """Run a job this runner has claimed (see module docstring)."""
    run = JobRun(ctx, job_id, owner, lost)
    row = run.checked()
    run.stage("load")
    data = _input_bytes(ctx, row)
    if row.kind == "animate":  # the second job kind: a sprite into a spritesheet
        run_animation(run, row, data)
        return
    params = job_params(row)
    limits = ctx.settings.image_limits()
    image = load_image(data, limits=limits, filename=row.filename)
    run.stage("pre_upscale")
    upscaler = cached_upscaler(get_upscaler(params.upscaler), ctx.artifacts)
    prepared = prepare(image, params, upscaler, limits=limits)
    run.stage("plan")
    ctx.store.put_tiles(job_id, [NewTile(i, t.x, t.y, t.w, t.h)
                                 for i, t in enumerate(prepared.plan.tiles)])
    run.check()
    backend_name = row.backend or ctx.settings.effective_backend  # resolved at submit
    plan = stage_plan(params, can_caption=ctx.settings.can_caption(backend_name))
    backend = make_backend(ctx.settings, backend_name) if plan.diffuses else None
    fmt = output_format_for(image.format, params.output_format)
    ext = formats.suffix_for(fmt)
    meta = {"upscaler": prepared.model,  # no job id: same pixels, same bytes
            "backend": backend.name if backend else "none"}
    level = ctx.settings.png_compress_level
    stream = _png_stream(prepared, fmt, meta, level) if streams(prepared, backend) else None
    rendered = run_stages(prepared, backend, plan, seed=int(row.seed or 0), cache=ctx.artifacts,
                          observer=run, known=_known(run),
                          style=_style_image(run, params) if backend is not None else None,
                          sink=stream.add if stream is not None else None)
    run.stage("encode")
    out = stream.finish() if stream is not None else encode_image(
        rendered.rgb, rendered.alpha, fmt, metadata=meta, compress_level=level,
        matte=parse_matte(params.matte), dds_format=image.pixel_format)
    sha = ctx.artifacts.put_bytes("outputs", out, ext)
    matte = matte_warning(fmt, rendered.alpha, params.matte)
    output: dict[str, Any] = {
        "width": prepared.width, "height": prepared.height, "format": fmt, "sha256": sha,
        "upscaler": rendered.upscaler, "backend": backend.name if backend else "none",
        "warnings": [*rendered.warnings, *([matte] if matte else [])]}
    run.stage("deliver")
    run.check()  # last chance to cancel: nothing has been written into a repo yet
    if row.target:
        target = TargetSpec.model_validate(row.target)
        done = deliver(ctx.settings, target, out, ext=ext, job_id=job_id,
                       label=size_tag(params, (row.input_width, row.input_height)),
                       last_delivered=lambda rel: ctx.delivered_sha(target.repo, rel),
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
    stages: dict[str, StageCount] = {k: {"done": v["total"], "total": v["total"]}
                                     for k, v in last.stages.items()}
    timings = {**last.timings, "deliver": round(time.monotonic() - run._stage_started, 3),
               "total": round(time.monotonic() - run.started, 3)}
    ctx.store.transition(job_id, JobStatus.succeeded, owner=owner, output=output, stages=stages,
                         output_sha256=sha, output_ext=ext, stage="done", progress=1.0,
                         timings=timings)
    log.info("job %s succeeded (%dx%d %s)", job_id, prepared.width, prepared.height, fmt)


def _input_bytes(ctx: RunContext, row: JobRecord) -> bytes:
    """The job's input image; a clear, retryable error when this runner's artifact store does
    not hold it (a runner with another data directory, or the input was garbage-collected)."""
    try:
        return ctx.artifacts.get_bytes("inputs", row.input_sha256, row.input_ext)
    except FileNotFoundError as exc:
        raise InputMissing(
            f"the job's input image ({row.input_sha256[:12]}…) is not in this runner's artifact "
            f"store ({ctx.settings.artifacts_url or ctx.settings.data_dir / 'artifacts'}); the "
            "API and every runner must share AAT_DATA_DIR or AAT_ARTIFACTS_URL; submit "
            f"{row.filename} again") from exc


def _png_stream(prepared: Prepared, fmt: str, meta: dict[str, str], level: int
                ) -> PngStream | None:
    """A PNG stream the pipeline feeds row by row (8-bit PNG only), else None."""
    if fmt != "png" or prepared.base.dtype != np.uint8:
        return None
    return PngStream(prepared.width, prepared.height, 3 if prepared.alpha is None else 4,
                     metadata=meta, compress_level=level)


def _style_image(run: JobRun, params: UpscaleParams) -> np.ndarray | None:
    if not params.style_image_sha256 or params.ip_adapter_scale <= 0:
        return None
    path = run.ctx.artifacts.find("inputs", params.style_image_sha256)
    if path is None:
        raise ParamsError("the job's style image is gone (garbage-collected?); upload it again")
    loaded = load_image(path.read_bytes(), limits=run.ctx.settings.image_limits())
    return loaded.rgb if loaded.rgb.dtype == np.uint8 else (loaded.rgb >> 8).astype(np.uint8)


def _known(run: JobRun) -> dict[int, TileMemory]:
    """What the job's tile rows say before the stages run: captions an earlier attempt stored,
    the user's per-tile prompts and re-runs, the result a tile holds (refined earlier, or kept
    by a rerun: it stays, whatever its prompt says now), and RunPod jobs a killed attempt
    submitted for a tile it never finished (the backend may resume them)."""
    captions: dict[int, RemoteRecord] = {}
    for entry in run.owned().remote_jobs:  # the last caption job submitted for each tile
        if entry["kind"] == "caption" and entry.get("key"):
            captions[entry["tile"]] = RemoteRecord(entry["key"], entry["id"])
    known = {}
    for r in run.ctx.store.get_tiles(run.job_id):
        remote = None
        if r.remote_job_id and r.status not in ("refined", "cached") and r.cache_key:
            remote = RemoteRecord(r.cache_key, r.remote_job_id)
        held = held_result(r)
        known[r.idx] = TileMemory(caption=r.caption or "", prompt=r.prompt or "",
                                  rerun=r.rerun, remote=remote,
                                  caption_remote=None if r.caption else captions.get(r.idx),
                                  kept=held[0] if held is not None else None)
    return known
