"""The GPU stages of `aat upscale --backend local|runpod`, in the calling process.

Given a prepared (pre-upscaled, planned) image: caption every tile, refine every tile with its
caption and a per-tile seed derived from one job seed, then refine the seam-fix tiles when seam
fix is on — the same stages and helpers (``service.jobs.refine``) the job runners use, with an
in-memory tile cache instead of the artifact store. Returns what ``render.finish`` needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable

import numpy as np

from service.backends.base import GpuBackend
from service.core.errors import ParamsError
from service.core.params import UpscaleParams
from service.jobs.refine import MemoryCache, TileWork, caption_tiles, derive_seed, refine_tiles
from service.render import Prepared, finish
from service.settings import Settings

log = logging.getLogger(__name__)
GPU_BACKENDS = ("local", "runpod")


@dataclasses.dataclass
class GpuResult:
    refined: dict[int, np.ndarray]
    seam_refined: dict[int, np.ndarray]
    seed: int
    captions: dict[int, str]


def open_backend(name: str, settings: Settings) -> GpuBackend:
    if name == "local":
        from service.backends.local import LocalBackend

        return LocalBackend(settings)
    if name == "runpod":
        from service.backends.runpod import RunPodBackend

        return RunPodBackend(settings)  # type: ignore[return-value]
    raise ParamsError(f"unknown backend {name!r}; use none, {' or '.join(GPU_BACKENDS)}")


def refine_prepared(prepared: Prepared, params: UpscaleParams, backend_name: str,
                    settings: Settings, on_stage: Callable[[str], None] | None = None
                    ) -> GpuResult:
    """Caption, refine and seam-fix the tiles of ``prepared`` on the named backend."""
    backend = open_backend(backend_name, settings)
    seed = params.seed if params.seed is not None else secrets.randbits(32)
    if params.caption and not settings.can_caption(backend_name):
        log.warning("no RUNPOD_CAPTION_ENDPOINT_ID: tiles are refined without captions")
        params = params.model_copy(update={"caption": False})
    return asyncio.run(_stages(backend, prepared, params, seed, on_stage or (lambda _s: None)))


async def _stages(backend: GpuBackend, prepared: Prepared, params: UpscaleParams, seed: int,
                  on_stage: Callable[[str], None]) -> GpuResult:
    from service.jobs.orchestrator import refine_options

    cache = MemoryCache()
    n = len(prepared.plan.tiles)
    inputs = {i: prepared.tile(i) for i in range(n)}
    try:
        captions: dict[int, str] = {}
        if params.caption:
            on_stage("caption")
            captions = await caption_tiles(backend, inputs, cache)
        on_stage("refine")
        options = refine_options(params)
        work = [TileWork(i, inputs[i], captions.get(i, ""), derive_seed(seed, i))
                for i in range(n)]
        refined = await refine_tiles(backend, work, options, cache)
        seam: dict[int, np.ndarray] = {}
        plan = prepared.seam_fix_plan()
        if plan is not None and plan.tiles:
            on_stage("seam-fix")
            no_seam = dataclasses.replace(
                prepared, params=params.model_copy(update={"seam_fix": "none"}))
            blended = finish(no_seam, refined, no_seam.params).rgb
            seam_options = dataclasses.replace(options, strength=params.seam_fix_strength)
            seam_work = [TileWork(i, prepared.seam_tile(blended, i), "", derive_seed(seed, 100_000 + i))
                         for i, t in enumerate(plan.tiles)]
            seam = await refine_tiles(backend, seam_work, seam_options, cache)
    finally:
        await backend.aclose()
    log.info("refined %d tiles (seed %d) on %s", n, seed, backend.name)
    return GpuResult(refined, seam, seed, captions)
