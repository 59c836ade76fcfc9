"""The stages after prepare, shared by `aat upscale` and the job runner: caption → refine →
seam fix on a GPU backend, then blend, colour fix and alpha (:mod:`~service.pipeline.assembly`).

:func:`run_stages` is the one sequence both entry points call with a prepared image:

1. **caption + refine, pipelined per tile**: a tile is refined as soon as its caption is in
   (a user prompt or a caption an earlier attempt stored replaces the caption call);
   each tile has its own seed, derived from the job seed (:func:`derive_seed`);
2. each refined tile is **colour-fixed as it arrives** against the pre-upscaled pixels under it
   (in a worker thread, while other tiles are on the GPU) — or handed to an
   :class:`~service.pipeline.assembly.Assembly` that also blends and streams its rows;
3. **seam fix** (when on): the fixed tiles are blended, the seam tiles are cut from that blend
   and refined with ``seam_fix_strength`` and their own seeds;
4. **blend**: :func:`~service.pipeline.assembly.finish` with ``colour_fixed=True``.

Progress, resume records and cost go to one :class:`~service.pipeline.observer.PipelineObserver`;
a remote job an interrupted attempt submitted is picked up through ``backend.resume`` (only the
backend knows whether it can), so nothing here depends on which backend runs.

Which stages run for an image is a :class:`StagePlan`, chosen by :func:`stage_plan` — the one
place asset types branch (see its docstring).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.backends.base import GpuBackend, RefineOptions
from service.core.params import UpscaleParams
from service.pipeline.assembly import Assembly, RowSink, finish, fix_tile
from service.pipeline.assembly import Rendered as Rendered
from service.pipeline.observer import PipelineObserver
from service.pipeline.prepare import Prepared
from service.pipeline.refine import (
    After,
    RemoteRecord,
    TileCache,
    TileWork,
    caption_one,
    derive_seed,
    refine_tiles,
)

log = logging.getLogger(__name__)

Stage = Literal["caption", "refine", "seam_fix"]
SEAM_SEED_OFFSET = 100_000  # seam tile i gets derive_seed(job seed, SEAM_SEED_OFFSET + i)


@dataclass(frozen=True)
class StagePlan:
    """The GPU stages one image goes through, in order.

    ``stages == ()`` means the image never diffuses: the pre-upscaled (prepared) pixels are the
    result, whatever backend is configured, and callers need not open a backend at all.
    """

    name: str
    stages: tuple[Stage, ...]

    @property
    def diffuses(self) -> bool:
        return "refine" in self.stages

    def runs(self, stage: Stage) -> bool:
        return stage in self.stages


def stage_plan(params: UpscaleParams, *, can_caption: bool = True) -> StagePlan:
    """The stage plan for an image with ``params`` — the one place the pipeline branches on
    what kind of image it is; `aat upscale` and the job runner both call it, so a branch here
    reaches both.

    Asset types that never diffuse (normal maps, masks, pixel art unless ``diffusion`` is on:
    ``params.diffuses``) get a plan without GPU stages; their own deterministic path runs in
    :func:`~service.pipeline.prepare.prepare`. Every other image gets the diffusion plan:
    caption → refine → seam fix, each when its parameter asks for it (captions also need a
    backend that ``can_caption``). A spritesheet takes the same plan; its tiles are planned
    per cell by ``prepare``.
    """
    if not params.diffuses:  # normal maps, masks, pixel art: their own deterministic path
        return StagePlan(params.asset_type, ())
    stages: list[Stage] = []
    if params.caption and can_caption:
        stages.append("caption")
    stages.append("refine")
    if params.seam_fix != "none":
        stages.append("seam_fix")
    return StagePlan("diffusion", tuple(stages))


@dataclass(frozen=True)
class TileMemory:
    """What is already known about a tile before the stages run: a caption an earlier attempt
    stored, a prompt the user set for this tile (used instead of a caption), how often the
    user asked to re-run it (a fresh seed each time), the remote jobs an interrupted attempt
    submitted for it: its refine (``remote``) and its caption (``caption_remote``), and the
    cache key of the result it holds (``kept``: refined earlier, or kept by a rerun), which it
    keeps while the cache has it even when its prompt was edited since."""

    caption: str = ""
    prompt: str = ""
    rerun: int = 0
    remote: RemoteRecord | None = None
    caption_remote: RemoteRecord | None = None
    kept: str | None = None


def refine_options(params: UpscaleParams, style: np.ndarray | None = None) -> RefineOptions:
    """Job-wide diffusion settings; ``style`` is the IP-Adapter image, if any."""
    return RefineOptions(**params.diffusion_kwargs(), ip_adapter_image=style)


def run_stages(prepared: Prepared, backend: GpuBackend | None, plan: StagePlan, *, seed: int,
               cache: TileCache, observer: PipelineObserver,
               known: Mapping[int, TileMemory] | None = None, style: np.ndarray | None = None,
               sink: RowSink | None = None) -> Rendered:
    """Run ``plan``'s GPU stages on ``backend`` (none when it is None or the plan does not
    diffuse), then blend, colour-fix and recombine alpha; see the module docstring.

    ``seed`` is the job seed; ``cache`` keeps captions and refined tiles (a re-run never pays
    twice); ``known`` holds what earlier attempts or the user left per tile index; ``style`` is
    the IP-Adapter image. ``sink`` (when given and the plan allows it,
    :meth:`Assembly.supports`) receives the finished rows band by band while tiles are still
    arriving. The backend is closed before this returns. Blocking: call it from a thread.
    """
    if backend is not None and not plan.diffuses:
        asyncio.run(backend.aclose())
        backend = None
    streaming = sink is not None and backend is not None and Assembly.supports(prepared)
    assembly = Assembly(prepared, sink) if streaming else None
    try:
        refined: dict[int, np.ndarray] = {}
        seam: dict[int, np.ndarray] = {}
        if backend is not None:
            refined, seam = asyncio.run(_gpu(
                backend, prepared, plan, seed, cache, observer, dict(known or {}), style,
                _after(prepared, assembly)))
        observer.stage("blend", 0, 1)
        if assembly is None:
            return finish(prepared, refined, prepared.params, seam_refined=seam,
                          colour_fixed=True)
        assembly.fill_missing(refined)
        return assembly.wait()
    except BaseException:
        if assembly is not None:
            assembly.abort()
        raise


def streams(prepared: Prepared, backend: GpuBackend | None) -> bool:
    """Whether :func:`run_stages` would feed a ``sink`` (else the caller encodes the result)."""
    return backend is not None and Assembly.supports(prepared)


def _after(prepared: Prepared, assembly: Assembly | None) -> After | None:
    """What happens to each refined tile as it arrives, while other tiles are in flight: it goes
    to the assembly (whose thread colour-fixes and blends it), or else its colour fix against
    the reference under it runs in a worker thread."""
    if assembly is not None:
        def put(index: int, tile: np.ndarray) -> np.ndarray:
            assembly.put(index, tile)
            return tile

        return put
    if prepared.params.colour_fix == "none":
        return None
    return lambda index, tile: fix_tile(prepared, index, tile)


async def _gpu(backend: GpuBackend, prepared: Prepared, plan: StagePlan, seed: int,
               cache: TileCache, observer: PipelineObserver, known: dict[int, TileMemory],
               style: np.ndarray | None, after: After | None
               ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    try:
        options = refine_options(prepared.params, style)
        refined = await _caption_and_refine(backend, prepared, plan, seed, cache, observer,
                                            known, options, after)
        seam = await _seam_fix(backend, prepared, plan, seed, cache, observer, refined,
                               options)
    finally:
        await backend.aclose()
    log.info("refined %d tiles (seed %d) on %s", len(refined), seed, backend.name)
    return refined, seam


async def _caption_and_refine(backend: GpuBackend, prepared: Prepared, plan: StagePlan,
                              seed: int, cache: TileCache, observer: PipelineObserver,
                              known: dict[int, TileMemory], options: RefineOptions,
                              after: After | None) -> dict[int, np.ndarray]:
    """Caption → refine per tile, pipelined: a tile is refined as soon as its caption is in."""
    n = len(prepared.plan.tiles)
    memory = {i: known.get(i, TileMemory()) for i in range(n)}
    captions = {i: m.caption for i, m in memory.items() if m.caption}
    want = plan.runs("caption")
    shared = want and prepared.sheet is not None  # a sheet: one caption for every frame
    if want:
        total = 1 if shared else n
        await asyncio.to_thread(observer.stage, "caption", min(len(captions), total), total)
    await asyncio.to_thread(observer.stage, "refine", 0, n, concurrent=want and not shared)

    async def caption_first(item: TileWork) -> TileWork:  # refine_tiles reports its start
        if not want or item.prompt:
            return item
        await asyncio.to_thread(observer.tile_started, "caption", item.index)
        text = await caption_one(backend, item.index, item.image, cache, observer,
                                 earlier=memory[item.index].caption_remote)
        return dataclasses.replace(item, prompt=text)

    if shared:  # the first cell's caption for all frames, so an animation does not flicker
        text = captions.get(0) or memory[0].prompt or await caption_one(
            backend, 0, prepared.tile(0), cache, observer, earlier=memory[0].caption_remote)
        memory = {i: dataclasses.replace(m, caption=text) for i, m in memory.items()}
        want = False
    work = [TileWork(i, prepared.tile(i), m.prompt or m.caption,
                     derive_seed(seed, prepared.seed_slot(i), m.rerun), kept=m.kept)
            for i, m in memory.items()]
    earlier = {i: m.remote for i, m in memory.items() if m.remote is not None}
    return await refine_tiles(backend, work, options, cache, observer=observer,
                              earlier=earlier, before=caption_first, after=after)


async def _seam_fix(backend: GpuBackend, prepared: Prepared, plan: StagePlan, seed: int,
                    cache: TileCache, observer: PipelineObserver,
                    refined: dict[int, np.ndarray], options: RefineOptions
                    ) -> dict[int, np.ndarray]:
    """Refine the seam-fix tiles, cut from the blend of the (colour-fixed) refined tiles."""
    seams = prepared.seam_fix_plan()
    if not plan.runs("seam_fix") or seams is None or not seams.tiles:
        return {}
    no_seam = dataclasses.replace(
        prepared, params=prepared.params.model_copy(update={"seam_fix": "none"}))
    blended = await asyncio.to_thread(
        lambda: finish(no_seam, refined, no_seam.params, colour_fixed=True).rgb)
    n = len(seams.tiles)
    await asyncio.to_thread(observer.stage, "seam_fix", 0, n)
    seam_options = options.model_copy(update={"strength": prepared.params.seam_fix_strength})
    work = [TileWork(i, prepared.seam_tile(blended, i), "",
                     derive_seed(seed, SEAM_SEED_OFFSET + i)) for i in range(n)]
    return await refine_tiles(backend, work, seam_options, cache, observer=observer,
                              stage="seam_fix")
