"""IP-Adapter style images: ``POST /v1/styles`` stores one and answers its sha256, which a job
names in ``style_image_sha256`` (the studio's new-job form uploads the picked file here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, get_settings, require_auth
from service.api.intake import read_capped
from service.api.problems import problem_responses
from service.core import formats
from service.settings import Settings

router = APIRouter(prefix="/v1/styles", tags=["jobs"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))


class StyleImage(BaseModel):
    sha256: str


@router.post("", response_model=StyleImage, status_code=201,
             summary="Store an IP-Adapter style image (raw image body)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 f.media_type: {"schema": {"type": "string", "format": "binary"}}
                 for f in formats.FORMATS}}},
             responses=problem_responses(400, 413, 422))
async def add_style(request: Request, settings: Annotated[Settings, Depends(get_settings)],
                    jobs: Annotated[JobServicePort, Depends(get_jobs)]) -> StyleImage:
    data = await read_capped(request, settings.max_upload_bytes)
    return StyleImage(sha256=await run_in_threadpool(jobs.add_style_image, data))
