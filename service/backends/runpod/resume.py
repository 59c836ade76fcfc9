"""Pick up a RunPod job an earlier, killed attempt of the same job had already paid for.

The pipeline reports each RunPod job id as soon as it is submitted (the job runner records it
on the tile row, or for a caption in the job's ``remote_jobs``). When a job is re-claimed after
a crash, a tile (or an animate job's frame) with a recorded id and no cached result is handed
to the backend's ``resume``, which re-polls that RunPod job here instead of submitting the
work again; only a job RunPod no longer has (result expired, TTL), one that failed or was
cancelled, or one whose output does not fit is submitted again (the result is then None).

:func:`repoll_output` is the one re-poll: it waits, turns the final status into output with
:func:`~service.backends.runpod.client.outcome`, hands the output to the caller's ``read`` and
says None for anything that cannot be used; :func:`repoll` (a refined tile),
:func:`repoll_caption` and the edit backends' ``resume`` (a frame,
:mod:`service.backends.edit`) only read their own output shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from service.backends.runpod.client import RunPodClient, outcome
from service.core.contracts import CaptionResponse, UpscaleResponse
from service.core.errors import AatError

log = logging.getLogger(__name__)
T = TypeVar("T")


async def repoll_output(client: RunPodClient, remote_id: str,
                        read: Callable[[Any], Awaitable[T]], what: str = "RunPod job"
                        ) -> tuple[T, dict[str, Any]] | None:
    """Wait for RunPod job ``remote_id`` on ``client``'s endpoint; ``read(output)`` and the
    final status body, or None when it cannot be used (gone, failed, cancelled, or ``read``
    refused the output with an :class:`AatError` or ``ValueError``): submit afresh then.
    Cancelling the wait cancels the RunPod job, as cancelling a fresh call would."""
    try:
        body = await client.wait(remote_id)
        value = await read(outcome(body))
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(client.cancel(remote_id)), 10.0)
        raise
    except (AatError, ValueError, IndexError) as exc:
        log.info("%s %s cannot be resumed (%s); submitting again", what, remote_id, exc)
        return None
    log.info("resumed %s %s from an earlier attempt", what, remote_id)
    return value, body


async def repoll(client: RunPodClient, remote_id: str, shape: tuple[int, ...], tile_id: str
                 ) -> tuple[np.ndarray, dict[str, Any], int] | None:
    """Tile ``tile_id`` (of ``shape``) of RunPod job ``remote_id`` (a job may carry several
    tiles), its final status body and how many tiles the job carried, or None (refine afresh);
    see :func:`repoll_output`."""
    from service.core.imageref import decode_to_array  # noqa: PLC0415 - lazy: PIL codec

    async def tile(output: Any) -> tuple[np.ndarray, int]:
        resp = UpscaleResponse.model_validate(output)
        mine = next((t for t in resp.tiles if t.tile_id == tile_id), None)
        if mine is None:
            raise ValueError(f"it carries no tile {tile_id}")
        image = await asyncio.to_thread(decode_to_array, mine.image)
        if image.shape != shape:
            raise ValueError(f"it returned {image.shape} for a {shape} tile")
        return image, len(resp.tiles)

    found = await repoll_output(client, remote_id, tile)
    if found is None:
        return None
    (image, n_tiles), body = found
    return image, body, n_tiles


async def repoll_caption(client: RunPodClient, remote_id: str
                         ) -> tuple[str, dict[str, Any]] | None:
    """The caption of RunPod job ``remote_id`` and its final status body, or None (caption
    afresh); see :func:`repoll_output`."""
    async def caption(output: Any) -> str:
        return CaptionResponse.model_validate(output).captions[0].caption

    return await repoll_output(client, remote_id, caption, "RunPod caption job")
