"""Downscaled WebP previews of a job's input and output, whole or one region:
``GET /v1/jobs/{id}/preview/{input|output}?max=1024[&x=&y=&w=&h=]``.

A page shows a large image through these and fetches detail on demand (a larger ``max``, or a
region at full resolution), so it never downloads a full-size PNG to draw a thumbnail. The
region is given in **output** pixels (half-open box, as tiles are), so a tile's before/after
previews are the same box of the input and of the output; for the input it is mapped through
the size ratio. Previews never enlarge (a region smaller than ``max`` comes at its own size;
the page renders 1:1 pixels with nearest-neighbour). Each preview is encoded once and kept in
``<data_dir>/previews/`` under a key of the source file's hash, the box and the size.

Rendering decodes the whole source (an output may be 16384² px, about 1 GB as RGBA), so at
most :data:`MAX_RENDERS` previews render at once per app, in threads of a limiter of their own;
further uncached requests wait their turn (they are not refused: a page asks for a handful of
previews at a time, and each render takes seconds at most). A cached preview never waits.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Annotated, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, get_settings, require_auth
from service.api.jobs import JobId
from service.api.problems import problem_responses
from service.core.animate import parse_size
from service.core.atomic import atomic_write
from service.core.errors import ParamsError
from service.core.frames import grid_shape
from service.core.imaging import ImageLimits, load_image
from service.core.jobs import JobPublic
from service.core.params import MAX_OUTPUT_SIDE
from service.pipeline.prepare import to_uint8
from service.settings import Settings

WEBP_QUALITY = 82
MAX_RENDERS = 2  # previews decoded at once per app (one large output is ~1 GB of RGBA)
# Outputs may be larger than the input limits allow; previews read them with the output limit.
_READ_LIMITS = ImageLimits(max_input_pixels=MAX_OUTPUT_SIDE * MAX_OUTPUT_SIDE,
                           max_input_side=MAX_OUTPUT_SIDE, max_output_side=MAX_OUTPUT_SIDE)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))

Box = tuple[int, int, int, int]


def output_size(job: JobPublic) -> tuple[int, int]:
    """The result's size: measured once it exists, else planned (an animate job: its sheet)."""
    if job.output is not None:
        return job.output.width, job.output.height
    if job.params is not None:
        return job.params.target_size(job.input.width, job.input.height)
    assert job.animation is not None  # the job's kind is animate
    anim = job.animation
    cell_w, cell_h = (parse_size(anim.frame_size) if anim.frame_size
                      else (job.input.width, job.input.height))
    cols, rows = grid_shape(anim.frames, anim.layout)
    return cols * cell_w, rows * cell_h


def _box(job: JobPublic, which: str, x: int | None, y: int | None, w: int | None,
         h: int | None) -> Box | None:
    """The requested region in the source's own pixels (None = the whole image)."""
    if x is None and y is None and w is None and h is None:
        return None
    if None in (x, y, w, h):
        raise ParamsError("give all of x, y, w and h for a region, or none of them",
                          code="invalid_params")
    assert x is not None and y is not None and w is not None and h is not None
    out_w, out_h = output_size(job)
    if x + w > out_w or y + h > out_h:
        raise ParamsError(f"the region {x},{y} {w}x{h} lies outside the {out_w}x{out_h} output",
                          code="invalid_params")
    if which == "output":
        return x, y, w, h
    sx, sy = job.input.width / out_w, job.input.height / out_h
    left, top = int(x * sx), int(y * sy)
    right = max(left + 1, min(job.input.width, round((x + w) * sx)))
    bottom = max(top + 1, min(job.input.height, round((y + h) * sy)))
    return left, top, right - left, bottom - top


def render_preview(data: bytes, box: Box | None, max_side: int) -> bytes:
    """WebP bytes of ``data`` (cropped to ``box``), fitted into ``max_side`` (never enlarged)."""
    loaded = load_image(data, limits=_READ_LIMITS)
    rgb = to_uint8(loaded.rgb)
    alpha = None if loaded.alpha is None else to_uint8(loaded.alpha)
    if box is not None:
        x, y, w, h = box
        rgb = rgb[y:y + h, x:x + w]
        alpha = None if alpha is None else alpha[y:y + h, x:x + w]
    pixels = rgb if alpha is None else np.dstack([rgb, alpha])
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if max(image.size) > max_side:
        factor = max(image.size) / max_side
        if factor >= 2:  # a cheap integer box reduction first, then a good filter
            image = image.reduce(int(factor // 1.5) or 1)
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "WEBP", quality=WEBP_QUALITY, method=4)
    return out.getvalue()


def _cache_path(settings: Settings, source: Path, box: Box | None, max_side: int) -> Path:
    key = hashlib.sha256(f"{source.name}|{box}|{max_side}|{WEBP_QUALITY}".encode()).hexdigest()
    return settings.data_dir / "previews" / key[:2] / f"{key}.webp"


def _read_cached(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def during_render() -> None:
    """Called inside each render, under the render limiter; nothing by default (tests count
    the renders in progress here)."""


def _render(path: Path, source: Path, box: Box | None, max_side: int) -> bytes:
    """Render and keep one preview (or read it, if a request for the same one went first)."""
    if (done := _read_cached(path)) is not None:
        return done
    during_render()
    data = render_preview(source.read_bytes(), box, max_side)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return data


def _render_limiter(request: Request) -> anyio.CapacityLimiter:
    """One limiter per app, made inside the app's event loop on first use."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "preview_limiter", None)
    if limiter is None:
        limiter = request.app.state.preview_limiter = anyio.CapacityLimiter(MAX_RENDERS)
    return limiter


@router.get(
    "/{job_id}/preview/{which}", summary="A downscaled WebP preview of the input or output",
    response_class=Response,
    responses={200: {"description": "WebP image", "content": {"image/webp": {}}},
               **problem_responses(404, 409, 422)},
)
async def preview(
    job_id: JobId, which: Literal["input", "output"], request: Request,
    jobs: Annotated[JobServicePort, Depends(get_jobs)],
    settings: Annotated[Settings, Depends(get_settings)],
    max: Annotated[int, Query(ge=16, le=MAX_OUTPUT_SIDE,
                              description="longest side of the preview in px")] = 1024,
    x: Annotated[int | None, Query(ge=0, le=MAX_OUTPUT_SIDE)] = None,
    y: Annotated[int | None, Query(ge=0, le=MAX_OUTPUT_SIDE)] = None,
    w: Annotated[int | None, Query(ge=1, le=MAX_OUTPUT_SIDE)] = None,
    h: Annotated[int | None, Query(ge=1, le=MAX_OUTPUT_SIDE)] = None,
) -> Response:
    job = await run_in_threadpool(jobs.get, job_id)
    box = _box(job, which, x, y, w, h)
    if which == "output":
        source, _media = await run_in_threadpool(jobs.result, job_id)
    else:
        source = await run_in_threadpool(jobs.input_path, job_id)
    path = _cache_path(settings, source, box, max)
    data = await run_in_threadpool(_read_cached, path)
    if data is None:
        data = await anyio.to_thread.run_sync(_render, path, source, box, max,
                                              limiter=_render_limiter(request))
    return Response(data, media_type="image/webp",
                    headers={"Cache-Control": "private, max-age=86400"})
