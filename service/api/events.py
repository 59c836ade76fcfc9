"""Server-Sent Events of a job's progress: ``GET /v1/jobs/{id}/events``.

The stream sends ``event: progress`` with the job resource as JSON data each time the job row
changes (with ``?tiles=true`` each is followed by ``event: tiles`` with
``{"tiles": [{"index", "state"}, ...]}`` for the tiles whose display state — queued,
captioning, refining, done, cached, failed — changed since the stream's last such event, all
tiles in the first one; the studio's job view uses it) (its version counter is the event ``id``, so a client reconnecting with
``Last-Event-ID`` only gets newer states), a ``: ping`` comment while nothing changes, and
``event: end`` with the final job once the job is terminal. Changes come from the job store
(``JobService.wait_for_change``), never from Celery results, so the stream works the same with
the embedded executor and with Celery runners on other hosts. Waiting happens in threads of
a separate limiter so many open streams cannot starve the request thread pool.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.concurrency import run_in_threadpool

from service.api.deps import JobServicePort, get_jobs, require_auth
from service.api.jobs import JobId, tile_views
from service.api.problems import problem_responses
from service.core.jobs import TILE_STATES, JobPublic

WAIT_S = 10.0
MAX_STREAMS = 256
_PING = b": ping\n\n"

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_auth)],
                   responses=problem_responses(401, 403))


def _stream_limiter(request: Request) -> anyio.CapacityLimiter:
    """One limiter per app, made inside the app's event loop on first use."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "sse_limiter", None)
    if limiter is None:
        limiter = request.app.state.sse_limiter = anyio.CapacityLimiter(MAX_STREAMS)
    return limiter


def _event(name: str, job: JobPublic, version: int) -> bytes:
    return format_sse_event(data_str=job.model_dump_json(), event=name, id=str(version))


async def job_stream(request: Request, jobs: JobServicePort, job_id: str,
                     version: int | None, wait_s: float = WAIT_S, *, tiles: bool = False,
                     ) -> AsyncIterator[bytes]:
    """Yield SSE frames until the job is terminal or the client goes away."""
    yield format_sse_event(retry=2000, comment="job " + job_id)
    sent: dict[int, str] = {}
    while True:
        job, new_version = await anyio.to_thread.run_sync(
            jobs.wait_for_change, job_id, version, wait_s, limiter=_stream_limiter(request))
        if new_version != version:
            version = new_version
            yield _event("progress", job, version)
            frame = None if not tiles else await anyio.to_thread.run_sync(
                _tiles_event, jobs, job_id, sent, limiter=_stream_limiter(request))
            if frame:
                yield frame
        else:
            yield _PING
        if job.status.terminal:
            yield _event("end", job, version)
            return
        if await request.is_disconnected():
            return


# The stream's frames, for the OpenAPI document (3.1 has no schema for event streams, so the
# frame shape is stated in words and each event's ``data`` schema under ``x-sse-events``).
SSE_DESCRIPTION = (
    "A Server-Sent Events stream. Each frame is `id: <version>`, `event: <name>`, "
    "`data: <JSON>`, then a blank line. `progress`: the job (JobPublic) each time it changes; "
    "`end`: the job once it has ended (succeeded, failed or canceled), after which the server "
    "closes the stream. With `?tiles=true` each `progress` is followed by `tiles`: "
    "`{\"tiles\": [{\"index\", \"state\"}]}` for the tiles whose state changed (all in the "
    "first one; no `id`). Comment lines (`: ping`) keep the connection open while nothing changes. Reconnect with "
    "`Last-Event-ID: <id>` to get only changes after that version.")
SSE_EVENTS = {"progress": {"$ref": "#/components/schemas/JobPublic"},
              "tiles": {"type": "object", "required": ["tiles"], "properties": {"tiles": {
                  "type": "array", "items": {"type": "object", "required": ["index", "state"],
                                             "properties": {
                                                 "index": {"type": "integer", "minimum": 0},
                                                 "state": {"type": "string",
                                                           "enum": list(TILE_STATES)}}}}}},
              "end": {"$ref": "#/components/schemas/JobPublic"}}


def _tiles_event(jobs: JobServicePort, job_id: str, sent: dict[int, str]) -> bytes | None:
    """A ``tiles`` frame with the tiles whose state differs from ``sent`` (updated in place)."""
    changed = [{"index": t.index, "state": t.state} for t in tile_views(jobs, job_id)
               if sent.get(t.index) != t.state]
    if not changed:
        return None
    sent.update((c["index"], c["state"]) for c in changed)  # type: ignore[misc]
    return format_sse_event(data_str=json.dumps({"tiles": changed}, separators=(",", ":")),
                            event="tiles")


def _last_event_id(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() and len(raw) < 19 else None


@router.get(
    "/{job_id}/events", summary="Progress as Server-Sent Events until the job ends",
    response_class=Response,
    responses={200: {"description": SSE_DESCRIPTION, "content": {"text/event-stream": {
                         "schema": {"type": "string"},
                         "x-sse-events": SSE_EVENTS}}},
               **problem_responses(404, 422)},
)
async def job_events(
    job_id: JobId, request: Request,
    jobs: Annotated[JobServicePort, Depends(get_jobs)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    tiles: Annotated[bool, Query(description="also send `event: tiles` frames")] = False,
) -> Response:
    job = await run_in_threadpool(jobs.get, job_id)  # 404 before the stream starts
    version = None if job.status.terminal else _last_event_id(last_event_id)
    stream = job_stream(request, jobs, job_id, version, tiles=tiles)
    return EventSourceResponse(stream, headers={"Cache-Control": "no-cache",
                                                "X-Accel-Buffering": "no"})
