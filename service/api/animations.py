"""``POST /v1/animations``: submit an ``animate`` job (one sprite into a spritesheet).

The body is the sprite's bytes (PNG or WebP, alpha kept); the query string carries the
:class:`~service.core.animate.AnimateParams` and an optional target in a repo
(``target_repo``, ``target_path``: the sheet and its .json/.tres/.webp go beside the source).
The job it makes is a job like any other: read, events, cancel and result live under
``/v1/jobs/{id}``, and the sheet's companion files under ``/v1/jobs/{id}/files/{name}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, get_settings, require_auth
from service.api.intake import params_error, read_capped, split_query
from service.api.jobs import IdempotencyKey, submit_responses, submitted_reply
from service.api.problems import ApiError, problem_responses
from service.backends.edit import check_edit_setup
from service.core.animate import AnimateParams
from service.core.errors import ConfigError
from service.core.jobs import JobPublic, TargetSpec
from service.settings import Settings

router = APIRouter(prefix="/v1/animations", tags=["animations"],
                   dependencies=[Depends(require_auth)], responses=problem_responses(401, 403))



def _openapi() -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "filename", "in": "query", "required": False,
                                     "schema": {"type": "string", "maxLength": 255}}]
    for name, schema in AnimateParams.model_json_schema()["properties"].items():
        if "anyOf" in schema:  # optional fields: query strings cannot be null
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    target = TargetSpec.model_json_schema()["properties"]
    for name, field in (("target_repo", "repo"), ("target_path", "path"),
                        ("mirror_dir", "mirror_dir"), ("overwrite", "overwrite")):
        schema = target[field]
        if "anyOf" in schema:
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        params.append({"name": name, "in": "query", "required": False,
                       "schema": {k: v for k, v in schema.items() if k != "title"}})
    params.append({"name": "naming", "in": "query", "required": False,
                   "description": "suffix (hero_walk.* beside the sprite) or mirror (under "
                   "mirror_dir); replace is refused",
                   "schema": {"type": "string", "enum": ["suffix", "mirror"]}})
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"parameters": params, "requestBody": {"required": True, "content": {
        "image/png": binary, "image/webp": binary}}}


@router.post(
    "", status_code=202, response_model=JobPublic, openapi_extra=_openapi(),
    summary="Animate a sprite into a spritesheet (raw image body, parameters in the query)",
    responses=submit_responses("same sprite and params"),
)
async def submit_animation(
    request: Request, response: Response,
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobServicePort, Depends(get_jobs)],
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    filename, query, target = split_query(request)
    try:
        params = AnimateParams.model_validate(query)  # a bad motion: motion_unknown (422)
    except ValidationError as exc:
        raise params_error(exc, "parameter") from exc
    try:  # a setup every frame would fail on: refused now, not queued to fail
        check_edit_setup(settings)
    except ConfigError as exc:
        raise ApiError(503, exc.code, exc.message) from exc
    data = await read_capped(request, settings.max_upload_bytes)
    job, created = await run_in_threadpool(
        jobs.submit_animation, data, filename=filename, params=params, target=target,
        idempotency_key=idempotency_key)
    return submitted_reply(request, response, job, created)
