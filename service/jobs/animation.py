"""Run one claimed ``animate`` job: load the sprite, generate its frames, store the sheet and
its companions, deliver them beside the source.

The sibling of :func:`service.jobs.orchestrator.run_job` for the second job kind (the runner
calls that, which hands ``kind='animate'`` rows here). Frames are the job's tiles: one
``tiles`` row per frame (its cell in the sheet, the motion's prompt as ``caption``, a user's
``prompt``, its ``rerun`` count and seed), so ``GET /v1/jobs/{id}/tiles``, the SSE ``tiles``
events, per-frame prompts and ``POST /v1/jobs/{id}/rerun`` work as for upscale tiles. Each
finished frame (its aligned cell) is cached by :func:`~service.pipeline.animate.frame_key`:
a resumed job, or a rerun that keeps a frame, takes it from the cache, so only the frames
chosen for a rerun (seed ``frame_seed(seed, i, rerun)``) change their cells.

Progress goes through the same :class:`~service.jobs.orchestrator.JobRun`: stage ``animate``
counts one unit per frame, and each frame's RunPod job id is recorded the moment ``/run``
answers (the frame's tile row ``remote_job_id`` with its ``frame_key``, and the job's
``remote_jobs``, where it is counted once), so an attempt that picks the job up again (lease
lost, runner killed) re-polls the frames that were in flight instead of paying for them twice.
Stopping is the upscale job's: a cancel stops the job within a quarter second and cancels the
frames in flight and their RunPod jobs; a stopping runner starts no new frame, lets those in
flight finish into the cache, and puts the job back in the queue; a runner that lost its lease
does the same but leaves the job to its new owner (which re-polls those RunPod jobs). A failed
frame fails the job (after cancelling the others) before anything is written into a repo;
delivery writes the sheet, its Aseprite ``.json``, Godot ``.tres`` and ``.webp`` preview beside
the source with :func:`~service.storage.game_repo.deliver_set`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.backends.base import CallAccounting
from service.backends.edit import edit_backend_kind, open_edit_backend
from service.core.animate import AnimateParams, frame_prompts, frame_seed, parse_size
from service.core.frames import cell_rects, grid_shape
from service.core.imaging import load_image
from service.core.jobs import JobStatus, TargetSpec
from service.core.naming import animation_results, animation_tag
from service.pipeline import animate as pipe
from service.pipeline.refine import keep_spent, spent_on
from service.settings import Settings
from service.storage.artifacts import ArtifactStore
from service.storage.game_repo import deliver_set
from service.storage.records import JobRecord, NewTile, StageCount, TileRecord, held_result

if TYPE_CHECKING:
    from service.jobs.orchestrator import JobRun

log = logging.getLogger(__name__)

CHECK_S = 0.25  # how often a job with frames in flight looks for a cancel


def frame_plan(params: AnimateParams, sprite_size: tuple[int, int],
               rerun: Collection[int] = ()) -> list[NewTile]:
    """One tile row per frame: its cell in the sheet (the cell is ``frame_size`` or the
    sprite's ``(w, h)``), the motion's prompt as its caption; frames in ``rerun`` once re-run."""
    cell = parse_size(params.frame_size) if params.frame_size else sprite_size
    prompts = frame_prompts(params)
    return [NewTile(i, x, y, w, h, caption=prompts[i], rerun=int(i in rerun))
            for i, (x, y, w, h) in enumerate(cell_rects(params.frames, cell, params.layout))]


def frame_requests(settings: Settings, input_sha256: str, params: AnimateParams,
                   frames: Iterable[NewTile | TileRecord]) -> dict[int, tuple[str, int]]:
    """Frame -> (its ``frame_key``, its seed): what each frame row asks the edit model for (the
    user's prompt, else the motion's; the seed of its rerun count), keyed as its cell is
    cached. The runner and a rerun (``service.jobs.service.rerun``) both ask here for the
    frames that hold no result (``held_result``): one that does keeps it while it is cached."""
    backend, side = edit_backend_kind(settings), settings.animate_edit_side
    out = {}
    for t in frames:
        seed = frame_seed(params.seed, t.idx, t.rerun)
        out[t.idx] = (pipe.frame_key(input_sha256, params, t.idx, t.prompt or t.caption or "",
                                     seed, backend, side), seed)
    return out


def cached_cells(cache: ArtifactStore, frames: list[TileRecord],
                 fresh: dict[int, tuple[str, int]], shape: tuple[int, ...]
                 ) -> tuple[dict[int, tuple[str, int]], dict[int, np.ndarray]]:
    """``(requests, cells)``: each frame's (key, seed) and the cells (``shape``) the cache
    already holds. A frame whose row holds a result (``held_result``: done earlier, or kept by
    a rerun) keeps that cell while the cache has it, whatever its prompt says now (an edited
    prompt waits until the frame is chosen); any other frame asks for ``fresh[idx]`` and takes
    its cell if an earlier attempt made it."""
    requests, cells = dict(fresh), {}
    for t in frames:
        for request in (held_result(t), fresh[t.idx]):
            cell = cache.get_array(request[0]) if request is not None else None
            if request is not None and cell is not None and cell.shape == shape:
                requests[t.idx], cells[t.idx] = request, cell
                break
    return requests, cells


def plan_frames(run: JobRun, params: AnimateParams, sprite_size: tuple[int, int]
                ) -> list[TileRecord]:
    """The job's frame rows, written once (a resumed job or a rerun keeps its own)."""
    run.ctx.store.put_tiles(run.job_id, frame_plan(params, sprite_size))
    return run.ctx.store.get_tiles(run.job_id)


def in_flight(frames: list[TileRecord], keys: dict[int, str], todo: Collection[int]
              ) -> dict[int, str]:
    """Frame -> the RunPod job an earlier, interrupted attempt submitted for it and never
    finished, when the frame is still the same request (its ``frame_key``: same prompt, seed,
    backend): that job is re-polled instead of paid again."""
    return {t.idx: t.remote_job_id for t in frames
            if t.idx in todo and t.remote_job_id and t.status not in ("refined", "cached")
            and t.cache_key == keys[t.idx]}


class _Frames:
    """The pipeline's :class:`~service.pipeline.animate.FrameObserver` for one job: frame rows,
    cached cells, progress and cost through :class:`JobRun`."""

    def __init__(self, run: JobRun, keys: dict[int, str], seeds: dict[int, int]) -> None:
        self.run, self.keys, self.seeds = run, keys, seeds

    def frame_started(self, index: int) -> None:
        self.run.tile_started("animate", index)

    def frame_submitted(self, index: int, remote_id: str) -> None:
        self.run.submitted("animate", index, self.keys[index], remote_id)

    def frame_finished(self, index: int, cell: np.ndarray, acct: CallAccounting) -> None:
        keep_spent(self.run.ctx.artifacts, self.keys[index], acct)  # travels with the cell
        self.run.ctx.artifacts.put_array(self.keys[index], cell)
        self.done(index, acct)

    def from_cache(self, index: int) -> None:
        """Frame ``index``'s cell came from the cache: its row says ``cached`` (a rerun's
        kept frame, or one an earlier attempt made), counted done, and what the call that
        made it cost, if this job paid for it and has not counted it (an attempt that lost its
        lease after caching the frame), see :meth:`JobRun.reused`."""
        spent = spent_on(self.run.ctx.artifacts, self.keys[index])
        if spent is not None:
            self.run.reused("animate", index, spent)
        self.done(index, None)

    def frame_failed(self, index: int, acct: CallAccounting) -> None:
        self.run.spent("animate", index, acct)

    def done(self, index: int, acct: CallAccounting | None) -> None:
        self.run.refined("animate", index, self.keys[index], self.seeds[index], acct)

    def check(self) -> None:
        self.run.check()


def run_animation(run: JobRun, row: JobRecord, data: bytes) -> None:
    """Run the animate job ``row`` (its sprite's bytes ``data``) to success, or raise."""
    ctx, job_id = run.ctx, run.job_id
    params = AnimateParams.model_validate(row.params)
    image = load_image(data, limits=ctx.settings.image_limits(), filename=row.filename)
    source = pipe.sprite_rgba(image.rgb, image.alpha)
    edit_side = ctx.settings.animate_edit_side
    prepared = pipe.prepare(source, params, edit_side)
    frames = plan_frames(run, params, (source.shape[1], source.shape[0]))
    prompts = {t.idx: t.prompt or t.caption or "" for t in frames}
    requests, cells = cached_cells(
        ctx.artifacts, frames, frame_requests(ctx.settings, row.input_sha256, params, frames),
        (prepared.cell[1], prepared.cell[0], 4))
    keys = {i: key for i, (key, _) in requests.items()}
    seeds = {i: seed for i, (_, seed) in requests.items()}
    observer = _Frames(run, keys, seeds)
    run.stage("animate", 0, params.frames)
    for i in sorted(cells):  # frames an earlier attempt (or the job a rerun came from) made
        observer.from_cache(i)
    todo = [i for i in sorted(keys) if i not in cells]
    earlier = in_flight(frames, keys, todo)
    log.info("animate job %s: %d frames to generate (%d of them already on RunPod), %d from "
             "the cache", job_id, len(todo), len(earlier), len(cells))

    async def generate() -> dict[int, np.ndarray]:
        backend = open_edit_backend(ctx.settings)
        try:
            return await pipe.generate(
                source, params, backend, edit_side=edit_side, indices=todo, prompts=prompts,
                seeds=seeds, observer=observer, earlier=earlier, poll_s=CHECK_S)
        finally:
            await backend.aclose()

    if todo:
        cells.update(asyncio.run(generate()))
    reruns = {t.idx: t.rerun for t in frames}  # a frame's attempt: its seed's rerun count
    anim = pipe.measured(source, params, [cells[i] for i in range(params.frames)],
                         [seeds[i] for i in range(params.frames)], edit_side,
                         [reruns[i] for i in range(params.frames)])
    run.stage("encode")
    label = animation_tag(params)
    target = TargetSpec.model_validate(row.target) if row.target else None
    sheet_rel = (animation_results(target.path, target.naming, params,
                                   mirror_dir=target.mirror_dir)[0].as_posix()
                 if target is not None else f"{Path(row.filename).stem}{label}.png")
    files = pipe.outputs_at(anim, sheet_rel)
    names = list(files)  # the sheet first
    shas = {name: ctx.artifacts.put_bytes("outputs", files[name], Path(name).suffix)
            for name in names}
    sheet_sha = shas[names[0]]
    cell_h, cell_w = anim.frames[0].shape[:2]
    cols, rows = grid_shape(params.frames, params.layout)
    output: dict[str, Any] = {
        "width": cols * cell_w, "height": rows * cell_h,
        "format": "png", "sha256": sheet_sha, "upscaler": "none", "backend": "animate",
        "frames": params.frames, "files": {n: shas[n] for n in names[1:]},
        "warnings": []}
    run.stage("deliver")
    run.check()  # last chance to cancel: nothing has been written into a repo yet
    if target is not None:
        by_ext = {Path(name).suffix: files[name] for name in names}
        done = deliver_set(ctx.settings, target, by_ext, label=label, job_id=job_id,
                           last_delivered=lambda rel: ctx.delivered_sha(target.repo, rel))
        for d, name in zip(done, names, strict=True):
            ctx.store.record_delivery(target.repo, d.rel, shas[name], job_id)
        output["delivered_path"] = done[0].rel
        output["sidecars"] = [d.rel for d in done[1:]]
    last = run.owned()  # once the result is in the repo, a late cancel cannot undo it
    stages: dict[str, StageCount] = {k: {"done": v["total"], "total": v["total"]}
                                     for k, v in last.stages.items()}
    timings = {**last.timings, "total": round(time.monotonic() - run.started, 3)}
    ctx.store.transition(job_id, JobStatus.succeeded, owner=run.owner, output=output,
                         stages=stages, output_sha256=sheet_sha, output_ext=".png",
                         stage="done", progress=1.0, timings=timings)
    log.info("animate job %s succeeded (%d frames, %s)", job_id, params.frames,
             params.animation_name())
