"""Routes of the job noun: submit, list, read, result, cancel, tiles and rerun (``/v1/jobs``).

Blocking job-service calls run in the thread pool so the event loop keeps serving; the
request body is parsed by :mod:`service.api.intake`. Progress streaming lives in
:mod:`service.api.events`.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, get_settings, require_auth
from service.api.intake import MAX_JSON_BYTES, JobFromPath, parse_submission
from service.api.loras import check_lora_names
from service.api.metrics import count_submission
from service.api.problems import ApiError, problem_responses
from service.core import formats
from service.core.errors import ParamsError, PathError
from service.core.jobs import JOB_ID_PATTERN, JobList, JobPublic, JobStatus, is_job_id, tile_state
from service.core.naming import NAMING_MODES, animation_tag, size_tag
from service.core.params import UpscaleParams
from service.settings import Settings

JOB_ID = r"^[A-Za-z0-9_-]{1,64}$"
JobId = Annotated[str, Path(pattern=JOB_ID, description="job id, e.g. j_01J...")]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))


class TileView(BaseModel):
    """One tile of an upscale job, or one frame of an animate job (``index`` = frame number,
    the box = its cell in the sheet, ``caption`` = the motion's edit prompt, ``prompt`` = the
    user's replacement for the next rerun, ``seed`` = the frame's seed)."""

    model_config = ConfigDict(extra="allow")
    index: int
    x: int
    y: int
    w: int
    h: int
    caption: str | None = None
    prompt: str | None = None
    status: str | None = None
    state: Literal["queued", "captioning", "refining", "done", "cached", "failed",
                   "canceled"] = Field(
        default="queued", description="for display: queued, captioning, refining, done, "
        "cached (refined earlier, from the cache), failed, or canceled (the job was canceled "
        "before this tile was done)")
    seed: int | None = None
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds this tile spent, by stage: `caption` and "
        "`refine` (wall time from start to answer, queueing included), `caption_gpu` and "
        "`refine_gpu` (GPU time billed); an animate job's frame: `animate` and `animate_gpu`; "
        "absent for a stage not run or served from the cache")


class TileList(BaseModel):
    tiles: list[TileView]


class TilePrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(max_length=4000)


class Rerun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tiles: list[Annotated[int, Field(ge=0, le=100_000)]] = Field(min_length=1, max_length=10_000)


def _with_urls(job: JobPublic) -> JobPublic:
    if not job.urls:
        job.urls = JobPublic.urls_for(job.id)
    return job


# ---- OpenAPI description of the three body forms and the query parameters -----------------


def _query_parameters() -> list[dict[str, Any]]:
    props = UpscaleParams.model_json_schema()["properties"]
    params = [{"name": "filename", "in": "query", "required": False,
               "schema": {"type": "string", "maxLength": 255}}]
    for name, schema in props.items():
        if name == "loras":
            schema = {"type": "string", "description": "name:weight,name2:weight"}
        elif "anyOf" in schema:  # optional fields: query strings cannot be null
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    for name in ("target_repo", "target_path", "mirror_dir"):
        params.append({"name": name, "in": "query", "required": False,
                       "schema": {"type": "string", "maxLength": 1000}})
    params.append({"name": "naming", "in": "query", "required": False,
                   "schema": {"type": "string", "enum": list(NAMING_MODES)}})
    params.append({"name": "overwrite", "in": "query", "required": False,
                   "schema": {"type": "boolean"}, "description": (
                       "replace a file at the result path that this service did not deliver")})
    return params


def _path_schema() -> dict[str, Any]:
    schema = JobFromPath.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # UpscaleParams and TargetSpec are components via JobPublic
    return schema


def _submit_openapi() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    multipart = {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "params": {"type": "string", "description": "JSON object of UpscaleParams"},
        "target": {"type": "string", "description": "JSON object {repo, path, naming, mirror_dir, overwrite}"},
    }}}
    return {
        "parameters": _query_parameters(),
        "requestBody": {"required": True, "content": {
            **{f.media_type: binary for f in formats.FORMATS},
            "multipart/form-data": multipart,
            "application/json": {"schema": _path_schema()},
        }},
    }


_LOCATION = {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}
# The submit routes' shared pieces (``POST /v1/jobs`` and ``POST /v1/animations``).
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              pattern=r"^[\x21-\x7e]+$")]


def submit_responses(same: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI replies of a submit route: 202 created, 200 the existing job (``same`` says
    what makes a submission the same), and its problems."""
    return {202: {"description": "job created", "headers": _LOCATION},
            200: {"description": f"the existing job ({same}, or same Idempotency-Key)",
                  "model": JobPublic, "headers": _LOCATION},
            **problem_responses(400, 409, 413, 415, 422, 503)}


def submitted_reply(request: Request, response: Response, job: JobPublic,
                    created: bool) -> JobPublic:
    """202 for a new job, 200 for the existing one, ``Location`` either way; counted."""
    count_submission(request, created)
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _with_urls(job)


# ---- routes ---------------------------------------------------------------------------------


@router.post(
    "", status_code=202, response_model=JobPublic, openapi_extra=_submit_openapi(),
    summary="Submit an image (raw body, multipart or a server path)",
    responses=submit_responses("same input and params"),
)
async def submit_job(
    request: Request, response: Response,
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobServicePort, Depends(get_jobs)],
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    sub = await parse_submission(request, settings)
    await check_lora_names(request, sub.params)
    check_payload_fits(request, sub.params)
    if sub.path is not None:
        job, created = await run_in_threadpool(
            jobs.submit_path, sub.path, params=sub.params, target=sub.target,
            idempotency_key=idempotency_key)
    else:
        assert sub.data is not None
        job, created = await run_in_threadpool(
            jobs.submit, sub.data, filename=sub.filename, params=sub.params,
            target=sub.target, idempotency_key=idempotency_key)
    return submitted_reply(request, response, job, created)


def check_payload_fits(request: Request, params: UpscaleParams) -> None:
    """Refuse at submit a tile size the GPU backend cannot carry (RunPod's request limit)."""
    backend = request.app.state.backend
    if backend is None or backend.name != "runpod":
        return
    from service.backends.runpod.limits import check_tile_size

    try:
        check_tile_size(params.tile_size)
    except ParamsError as exc:
        raise ApiError(422, exc.code, exc.message) from exc


@router.get("", response_model=JobList, summary="List jobs, newest first",
            responses=problem_responses(400, 422))
def list_jobs(
    jobs: Annotated[JobServicePort, Depends(get_jobs)],
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # the pattern is documented (clients and fuzzers see it) and checked below, so a bad cursor
    # is a 400 invalid_cursor rather than a generic validation error
    cursor: Annotated[str | None, Query(max_length=200, json_schema_extra={
        "pattern": JOB_ID_PATTERN.pattern,
        "description": "next_cursor of the previous page"})] = None,
) -> JobList:
    if cursor is not None and not is_job_id(cursor):
        raise PathError(f"cursor {cursor[:80]!r} is not a job id; pass the next_cursor of the "
                        "previous page, or no cursor for the first page",
                        code="invalid_cursor")
    items, next_cursor = jobs.list(status=status, limit=limit, cursor=cursor)
    return JobList(items=[_with_urls(j) for j in items], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, summary="Read one job",
            responses=problem_responses(404, 422))
def get_job(job_id: JobId, response: Response,
            jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> JobPublic:
    job = jobs.get(job_id)
    if not job.status.terminal:
        response.headers["Retry-After"] = "1"
    return _with_urls(job)


@router.get("/{job_id}/result", summary="The result image",
            response_class=FileResponse,
            responses={200: {"description": "the image bytes",
                             "content": {f.media_type: {} for f in formats.FORMATS
                                         if f.writable}},
                       **problem_responses(404, 409, 422)})
def get_result(job_id: JobId, jobs: Annotated[JobServicePort, Depends(get_jobs)],
               ) -> FileResponse:
    path, media_type = jobs.result(job_id)
    return FileResponse(path, media_type=media_type,
                        filename=result_filename(jobs.get(job_id), path.suffix))


@router.get("/{job_id}/files/{name}", summary="A companion file of an animate job's sheet",
            response_class=FileResponse,
            responses={200: {"description": "the file (Aseprite .json, Godot .tres, .webp "
                             "preview), as listed in output.files"},
                       **problem_responses(404, 422)})
def get_companion(job_id: JobId,
                  name: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,300}$")],
                  jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> FileResponse:
    return FileResponse(jobs.companion(job_id, name), filename=name)


@router.get("/{job_id}/input", summary="The job's input image, as it was submitted",
            response_class=FileResponse,
            responses={200: {"description": "the image bytes", "content": {"image/*": {}}},
                       **problem_responses(404, 422)})
def get_input(job_id: JobId, jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> FileResponse:
    job = jobs.get(job_id)
    path = jobs.input_path(job_id)
    # the stored file's format decides the type; the client's file name never does
    return FileResponse(path, media_type=formats.media_type_for_suffix(path.suffix),
                        filename=PurePath(job.input.filename).name or "input")


def result_filename(job: JobPublic, suffix: str) -> str:
    """``rock_x2.png`` for ``rock.png`` at scale 2, ``rock_1024x1024.png`` for a fixed size."""
    stem = PurePath(job.input.filename).stem or "result"
    if job.animation is not None:  # hero.png -> hero_walk.png, as delivered
        return f"{stem}{animation_tag(job.animation)}{suffix}"
    assert job.params is not None  # an upscale job
    return f"{stem}{size_tag(job.params, (job.input.width, job.input.height))}{suffix}"


@router.post("/{job_id}/cancel", response_model=JobPublic, status_code=202,
             summary="Cancel a job (terminal jobs come back unchanged with 200)",
             responses={200: {"description": "the job was already finished",
                              "model": JobPublic},
                        **problem_responses(404, 422)})
def cancel_job(job_id: JobId, response: Response,
               jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> JobPublic:
    job = jobs.get(job_id)
    if job.status.terminal:
        response.status_code = 200
        return _with_urls(job)
    return _with_urls(jobs.cancel(job_id))


@router.get("/{job_id}/tiles", response_model=TileList,
            summary="The job's tiles (an animate job: one per frame, in its sheet cell)",
            responses=problem_responses(404, 422))
def list_tiles(job_id: JobId, jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> TileList:
    return TileList(tiles=tile_views(jobs, job_id))


def tile_views(jobs: JobServicePort, job_id: str) -> list[TileView]:
    """The job's tiles with their display state (also sent by the SSE stream)."""
    status = jobs.get(job_id).status.value
    return [TileView.model_validate({**t, "state": tile_state(t.get("status"), status)})
            for t in jobs.tiles(job_id)]


@router.patch("/{job_id}/tiles/{n}", response_model=TileView, max_body_size=MAX_JSON_BYTES,
              summary="Set one tile's prompt (used by the next rerun that chooses the tile); for "
              "an animate job, one frame's edit prompt",
              responses=problem_responses(404, 409, 422))
def set_tile_prompt(job_id: JobId, n: Annotated[int, Path(ge=0, le=100_000)],
                    body: TilePrompt,
                    jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> TileView:
    return TileView.model_validate(jobs.set_tile_prompt(job_id, n, body.prompt))


@router.post("/{job_id}/rerun", response_model=JobPublic, status_code=202,
             max_body_size=MAX_JSON_BYTES,
             summary="Refine chosen tiles again and re-blend; for an animate job, generate "
             "chosen frames again (new seeds) and rewrite the sheet: a new job",
             description="A new job from the same input: the chosen tiles (an animate job: "
             "frames, numbered from 0) get fresh seeds and their current prompt, every other "
             "one comes from the cache unchanged, and the result is delivered again. The job "
             "must have finished (409 `not_ready`); an unknown tile is 404, a frame outside "
             "the animation 422 `frame_unknown`.",
             responses={202: {"headers": _LOCATION, "description": "rerun queued"},
                        **problem_responses(404, 409, 422)})
def rerun_tiles(job_id: JobId, body: Rerun, response: Response,
                jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> JobPublic:
    job = jobs.rerun(job_id, body.tiles)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _with_urls(job)


@router.post(
    "/{job_id}/retry", response_model=JobPublic, status_code=202,
    summary="Retry a failed or canceled job as a new job (same input, params, target, kind)",
    description="Submits the job's stored input again with its parameters (and the seed it "
    "ran with), target and kind (upscale or animate), as its submit route would: 202 with the "
    "new job, or 200 with the job an earlier retry (same Idempotency-Key, or same input and "
    "params while that job has not failed) made. A succeeded job is not retried (409 "
    "`job_succeeded`: re-run chosen tiles or frames instead); a job that has not ended is 409 "
    "`not_ready`; an input that was garbage-collected is 404.",
    responses={**submit_responses("an earlier retry of this job"), **problem_responses(404)},
)
def retry_job(job_id: JobId, request: Request, response: Response,
              jobs: Annotated[JobServicePort, Depends(get_jobs)],
              idempotency_key: IdempotencyKey = None) -> JobPublic:
    job, created = jobs.retry(job_id, idempotency_key=idempotency_key)
    return submitted_reply(request, response, job, created)
