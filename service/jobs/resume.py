"""Pick up a RunPod job an earlier, killed attempt of the same job had already paid for.

The refine loop records each tile's RunPod job id as soon as it is submitted. When a job is
re-claimed after a crash, a tile with a recorded id and no cached result is re-polled here
instead of being submitted again; only a job RunPod no longer has (result expired, TTL, failed)
is resubmitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
import numpy as np

from service.backends.base import CallAccounting
from service.backends.runpod_client import PollPolicy, RetryPolicy, RunPodClient, outcome
from service.core.contracts import UpscaleResponse
from service.core.errors import AatError, ConfigError
from service.settings import Settings
from workers.common.imageref import decode_to_array

log = logging.getLogger(__name__)


class RunPodResumer:
    """``await resumer(remote_id, shape)`` → ``(pixels, accounting)`` or None (resubmit)."""

    def __init__(self, settings: Settings) -> None:
        s = settings
        if s.runpod_api_key is None or not s.runpod_upscale_endpoint_id:
            raise ConfigError("resuming RunPod jobs needs RUNPOD_API_KEY and "
                              "RUNPOD_UPSCALE_ENDPOINT_ID")
        self._price = s.runpod_price_per_gpu_second
        self._client = RunPodClient(
            s.runpod_base_url, s.runpod_upscale_endpoint_id, s.runpod_api_key,
            retry=RetryPolicy(s.runpod_http_attempts, s.runpod_backoff_base_s,
                              s.runpod_backoff_max_s),
            poll=PollPolicy(s.runpod_poll_min_s, s.runpod_poll_max_s, s.runpod_ttl_s + 60.0),
            http=httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)))

    async def __call__(self, remote_id: str, shape: tuple[int, ...]
                       ) -> tuple[np.ndarray, CallAccounting] | None:
        try:
            body = await self._client.wait(remote_id)
            output = outcome(body)
            resp = UpscaleResponse.model_validate(output)
            image = decode_to_array(resp.tiles[0].image)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._client.cancel(remote_id)), 10.0)
            raise
        except (AatError, ValueError, IndexError) as exc:
            log.info("RunPod job %s cannot be resumed (%s); resubmitting", remote_id, exc)
            return None
        if image.shape != shape:
            return None
        execution = int(body.get("executionTime") or 0)
        acct = CallAccounting(remote_job_ids=[remote_id], delay_ms=int(body.get("delayTime") or 0),
                              execution_ms=execution, attempts=1,
                              cost_usd=execution / 1000.0 * self._price)
        log.info("resumed RunPod job %s from an earlier attempt", remote_id)
        return image, acct

    async def aclose(self) -> None:
        await self._client.aclose()
