"""Run one claimed ``animate`` job: load the sprite, generate its frames, store the sheet and
its companions, deliver them beside the source.

The sibling of :func:`service.jobs.orchestrator.run_job` for the second job kind (the runner
calls that, which hands ``kind='animate'`` rows here). Progress goes through the same
:class:`~service.jobs.orchestrator.JobRun`: stage ``animate`` counts one unit per frame, and
each finished frame is where a cancel (or a stopping runner, or a lost lease) stops the job:
the frames still in flight are cancelled. A failed frame fails the job before anything is
written into a repo; delivery writes the sheet, its Aseprite ``.json``, Godot ``.tres`` and
``.webp`` preview beside the source with :func:`~service.storage.game_repo.deliver_set`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.backends.edit import open_edit_backend
from service.core.animate import AnimateParams
from service.core.frames import grid_shape
from service.core.imaging import load_image
from service.core.jobs import JobStatus, TargetSpec
from service.pipeline import animate as pipe
from service.storage.game_repo import deliver_set
from service.storage.records import JobRecord, StageCount

if TYPE_CHECKING:
    from service.jobs.orchestrator import JobRun

log = logging.getLogger(__name__)


def sheet_label(params: AnimateParams) -> str:
    """What the sheet's name adds to the source's: ``hero.png`` -> ``hero_walk.png``."""
    return f"_{params.animation_name()}"


def run_animation(run: JobRun, row: JobRecord, data: bytes) -> None:
    """Run the animate job ``row`` (its sprite's bytes ``data``) to success, or raise."""
    ctx, job_id = run.ctx, run.job_id
    params = AnimateParams.model_validate(row.params)
    image = load_image(data, limits=ctx.settings.image_limits(), filename=row.filename)
    source = pipe.sprite_rgba(image.rgb, image.alpha)
    run.stage("animate", 0, params.frames)

    def frame_done(_index: int) -> None:
        run.frame_done()  # one more unit of stage `animate`
        run.check()  # canceled, stopping or lease lost: the frames in flight are cancelled

    async def generate() -> pipe.Animation:
        backend = open_edit_backend(ctx.settings)
        try:
            return await pipe.animate(source, params, backend,
                                      edit_side=ctx.settings.animate_edit_side,
                                      on_frame=frame_done)
        finally:
            await backend.aclose()

    anim = asyncio.run(generate())
    run.stage("encode")
    label = sheet_label(params)
    target = TargetSpec.model_validate(row.target) if row.target else None
    rel = target.path if target is not None else Path(row.filename).name
    files = pipe.outputs_beside(anim, rel, label)
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
        done = deliver_set(ctx.settings, target, by_ext, label=label, job_id=job_id)
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
