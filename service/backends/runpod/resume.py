"""Pick up a RunPod job an earlier, killed attempt of the same job had already paid for.

The pipeline reports each tile's RunPod job id as soon as it is submitted (the job runner
records it on the tile row). When a job is re-claimed after a crash, a tile with a recorded id
and no cached result is handed to :meth:`RunPodBackend.resume`, which re-polls that RunPod job
here instead of submitting the tile again; only a job RunPod no longer has (result expired,
TTL, failed) or whose output does not fit the tile is resubmitted (the result is then None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np

from service.backends.runpod.client import RunPodClient, outcome
from service.core.contracts import CaptionResponse, UpscaleResponse
from service.core.errors import AatError

log = logging.getLogger(__name__)


async def repoll(client: RunPodClient, remote_id: str, shape: tuple[int, ...]
                 ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Wait for RunPod job ``remote_id`` on ``client``'s endpoint; its refined tile (of
    ``shape``) and final status body, or None when it cannot be used (resubmit instead).
    Cancelling the wait cancels the RunPod job, as a fresh call would."""
    from service.core.imageref import decode_to_array  # noqa: PLC0415 - lazy: PIL codec

    try:
        body = await client.wait(remote_id)
        resp = UpscaleResponse.model_validate(outcome(body))
        image = await asyncio.to_thread(decode_to_array, resp.tiles[0].image)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(client.cancel(remote_id)), 10.0)
        raise
    except (AatError, ValueError, IndexError) as exc:
        log.info("RunPod job %s cannot be resumed (%s); resubmitting", remote_id, exc)
        return None
    if image.shape != shape:
        log.info("RunPod job %s returned %s for a %s tile; resubmitting", remote_id,
                 image.shape, shape)
        return None
    log.info("resumed RunPod job %s from an earlier attempt", remote_id)
    return image, body


async def repoll_caption(client: RunPodClient, remote_id: str
                         ) -> tuple[str, dict[str, Any]] | None:
    """Wait for caption job ``remote_id``; its caption and final status body, or None when
    it cannot be used (caption afresh). Cancelling the wait cancels the RunPod job."""
    try:
        body = await client.wait(remote_id)
        resp = CaptionResponse.model_validate(outcome(body))
        text = resp.captions[0].caption
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(client.cancel(remote_id)), 10.0)
        raise
    except (AatError, ValueError, IndexError) as exc:
        log.info("RunPod caption job %s cannot be resumed (%s); captioning again", remote_id,
                 exc)
        return None
    log.info("resumed RunPod caption job %s from an earlier attempt", remote_id)
    return text, body
