"""Plan a job before submitting it: ``POST /v1/plan`` (tiles and an estimate; changes nothing).

The tile boxes come from the same planner the job runner uses (:func:`plan_tiles`), so a page
draws the real grid without tiling maths of its own. The estimate counts the tiles a job would
send to the GPU (plus seam-fix tiles) and prices them:

* seconds per tile: the mean GPU execution seconds per tile of the last :data:`RECENT_JOBS`
  succeeded jobs that used the GPU, else :data:`DEFAULT_TILE_S` scaled by steps and tile area
  (a 1024 px tile at 30 steps, caption included, on an A100-class worker);
* price: ``AAT_RUNPOD_PRICE_PER_GPU_SECOND`` (USD).

Without a GPU backend, or for asset types that never diffuse (normal maps, masks, pixel art),
nothing is refined and the estimate is zero (``no_gpu``). A spritesheet's tiles are planned per
cell, as the runner plans them; ``asset_type=auto`` is estimated as diffusing (it is resolved
from the pixels only at submit).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, get_settings, require_auth
from service.api.intake import MAX_JSON_BYTES
from service.api.problems import problem_responses
from service.core.cells import integer_scale, plan_sheet
from service.core.imaging import check_output_size
from service.core.jobs import JobPublic, JobStatus
from service.core.params import MAX_OUTPUT_SIDE, UpscaleParams
from service.core.sheets import layout_for
from service.core.tiling import TilePlan, plan_seam_fix, plan_tiles
from service.pipeline.stages import stage_plan
from service.settings import Settings

DEFAULT_TILE_S = 8.0
RECENT_JOBS = 20
_GPU_STAGES = ("refine", "seam_fix")

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_width: int = Field(ge=1, le=MAX_OUTPUT_SIDE)
    input_height: int = Field(ge=1, le=MAX_OUTPUT_SIDE)
    params: UpscaleParams = Field(default_factory=UpscaleParams)


class PlannedTile(BaseModel):
    index: int
    x: int
    y: int
    w: int
    h: int


class Estimate(BaseModel):
    tiles: int = Field(description="tiles sent to the GPU, seam-fix tiles included")
    seconds_per_tile: float
    seconds_per_tile_source: Literal["recent_jobs", "default", "no_gpu"]
    gpu_seconds: float
    price_per_gpu_second: float
    usd: float


class Plan(BaseModel):
    width: int = Field(description="output width")
    height: int = Field(description="output height")
    tile_size: int
    overlap: int
    tiles: list[PlannedTile]
    estimate: Estimate


def _gpu_tiles(job: JobPublic) -> int:
    return sum(job.stages[s].total for s in _GPU_STAGES if s in job.stages)


def tile_grid(params: UpscaleParams, in_w: int, in_h: int, width: int, height: int) -> TilePlan:
    """The tiles the runner will plan: per cell for a spritesheet, else one grid."""
    if params.sheet is not None:
        layout = layout_for(params.sheet, in_w, in_h)
        factor = integer_scale(layout, width, height)
        return plan_sheet(layout.scaled(factor), params.tile_size, params.overlap).plan
    return plan_tiles(width, height, params.tile_size, params.overlap, tileable=params.tileable)


def seconds_per_tile(recent: list[JobPublic], params: UpscaleParams) -> tuple[float, str]:
    """Measured GPU seconds per tile of recent jobs, else the documented default."""
    measured = [j for j in recent if j.cost.execution_s > 0 and _gpu_tiles(j) > 0]
    if measured:
        total_s = sum(j.cost.execution_s for j in measured)
        return total_s / sum(_gpu_tiles(j) for j in measured), "recent_jobs"
    area = (params.tile_size / 1024) ** 2
    return DEFAULT_TILE_S * area * params.steps / 30, "default"


@router.post("/plan", response_model=Plan, summary="Tiles and cost of a job, before submitting",
             responses=problem_responses(422), max_body_size=MAX_JSON_BYTES)
async def plan(body: PlanRequest, settings: Annotated[Settings, Depends(get_settings)],
               jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> Plan:
    params = body.params
    width, height = params.target_size(body.input_width, body.input_height)
    check_output_size(width, height, settings.image_limits())
    grid = tile_grid(params, body.input_width, body.input_height, width, height)
    stages = stage_plan(params)
    count = len(grid.tiles)
    if params.seam_fix != "none" and stages.runs("seam_fix") and params.sheet is None:
        count += len(plan_seam_fix(grid, params.seam_fix).tiles)
    price = settings.runpod_price_per_gpu_second
    if settings.effective_backend == "none" or not stages.diffuses:
        per_tile, source, count_gpu = 0.0, "no_gpu", 0
    else:
        recent, _ = await run_in_threadpool(jobs.list, status=JobStatus.succeeded,
                                            limit=RECENT_JOBS, cursor=None)
        per_tile, source = seconds_per_tile(recent, params)
        count_gpu = count
    gpu_s = per_tile * count_gpu
    return Plan(
        width=width, height=height, tile_size=grid.tile_size, overlap=grid.overlap,
        tiles=[PlannedTile(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h) for t in grid.tiles],
        estimate=Estimate(tiles=count_gpu, seconds_per_tile=round(per_tile, 3),
                          seconds_per_tile_source=source,  # type: ignore[arg-type]
                          gpu_seconds=round(gpu_s, 2), price_per_gpu_second=price,
                          usd=round(gpu_s * price, 4)))
