"""`LocalBackend`: the worker pipelines in-process, on the artist's own GPU.

The same code as the RunPod workers (``workers/upscale/pipeline.py``,
``workers/caption/pipeline.py``, ``workers/upscale/models.py``), imported lazily so that the
API, the job runners and the CLI never load torch unless this backend is chosen. Pipelines
load once per process (weights from ``local_weights_dir``, default ``<data_dir>/weights``,
filled by ``python -m workers.upscale.weights <dir>`` and ``python -m workers.caption.weights
<dir>``) and are shared by every ``LocalBackend`` built afterwards. GPU calls run in a thread,
one at a time. With ``local_batch_size`` > 1, tiles of one job that are in flight together are
refined in one batched pipeline call (``max_concurrency()`` keeps that many in flight).

Models are placed by memory (``local_memory.plan``): when SDXL and the captioner do not fit on
the card together (a 24 GB card with Qwen3-VL-8B), one is on the GPU at a time and the other is
parked in CPU memory before each GPU call that needs the room; ``health()`` (and so
``aat doctor``) says which placement this machine gets.

Missing torch, a missing CUDA GPU or missing weights raise :class:`ConfigError` with the fix.
Tests inject tiny pipelines (``upscale=``/``caption=``) on ``device="cpu"``; with
``AAT_WORKER_TINY=1`` and ``local_device=cpu`` the backend builds tiny random pipelines itself
(for end-to-end runs of ``aat upscale --backend local`` without weights).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.backends.base import (
    CallAccounting,
    CaptionResult,
    OnSubmitted,
    RefineOptions,
    RefineResult,
    RemoteImport,
    TileTask,
)
from service.backends.local_memory import Placement, plan, weights_on_disk_gb
from service.core.contracts import (
    ImportModelRequest,
    ImportProgress,
    ModelInfo,
    UploadModelRequest,
)
from service.core.errors import AatError, ConfigError, WorkerError
from service.settings import Settings, load_settings

log = logging.getLogger(__name__)
_shared: dict[tuple[str, str, str], Any] = {}  # (kind, device, weights dir) -> pipeline
_shared_lock = threading.Lock()
_gpu_lock = threading.Lock()  # one GPU call at a time per process, across backend instances
BATCH_WINDOW_S = 0.05  # how long the first tile of a batch waits for company


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings | None = None, *, device: str | None = None,
                 upscale: Any = None, caption: Any = None, lora_dir: Path | None = None,
                 batch_size: int | None = None) -> None:
        s = settings or load_settings()
        self.device = device or s.local_device
        self.batch_size = batch_size or s.local_batch_size
        self.vram_gb = s.local_vram_gb
        self._pending: dict[int, tuple[RefineOptions, list[tuple[Any, asyncio.Future[Any]]]]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._imports: dict[str, RemoteImport] = {}  # LoRA imports by URL, by id
        self._import_stops: dict[str, Any] = {}  # id -> workers.common.cancel.StopFlag
        self._import_tasks: dict[str, asyncio.Future[None]] = {}
        self.weights_dir = s.local_weights_dir or s.data_dir / "weights"
        self.lora_dir = lora_dir or s.local_lora_dir or s.data_dir / "loras"
        self._upscale = upscale
        self._caption = caption
        self._gpu = _gpu_lock
        if upscale is None or caption is None:
            _check_runtime(self.device)

    # ---- pipelines -------------------------------------------------------------------------

    def _pipeline(self, kind: str) -> Any:
        pipe = self._upscale if kind == "upscale" else self._caption
        if pipe is None:
            key = (kind, self.device, str(self.weights_dir))
            with _shared_lock:
                if key not in _shared:
                    _shared[key] = _load(kind, self.device, self.weights_dir, self.lora_dir)
                pipe = _shared[key]
        if kind == "upscale":
            pipe.lora_dir = self.lora_dir  # this backend's LoRA folder
        return pipe

    # ---- GpuBackend ------------------------------------------------------------------------

    async def max_concurrency(self) -> int:
        return self.batch_size  # enough tiles in flight to fill one batched call

    async def caption(self, tile_id: str, image: np.ndarray, *, instruction: str | None = None,
                      max_new_tokens: int = 48,
                      on_submitted: OnSubmitted | None = None) -> CaptionResult:
        from PIL import Image

        def run() -> list[str]:
            pipe = self._pipeline("caption")
            with self._gpu:
                self._make_room("caption")
                return pipe.caption([Image.fromarray(image)], instruction, max_new_tokens)

        start = time.monotonic()
        [text] = await asyncio.to_thread(run)
        return CaptionResult(tile_id, text, _accounting(start))

    async def refine(self, tile: TileTask, options: RefineOptions, *,
                     on_submitted: OnSubmitted | None = None) -> RefineResult:
        from PIL import Image

        from workers.upscale.pipeline import TileJob

        job = TileJob(tile.tile_id, Image.fromarray(tile.image).convert("RGB"), tile.prompt,
                      tile.seed)
        start = time.monotonic()
        if self.batch_size == 1:
            [out] = await asyncio.to_thread(self._refine_now, [job], options)
        else:
            out = await self._refine_batched(job, options)
        pixels = np.asarray(out.convert("RGB"), dtype=np.uint8)
        return RefineResult(tile.tile_id, pixels, tile.seed, _accounting(start))

    def _refine_now(self, jobs: list[Any], options: RefineOptions) -> list[Any]:
        pipe = self._pipeline("upscale")
        with self._gpu:
            self._make_room("upscale")
            return list(pipe.refine(jobs, _settings(options, len(jobs))))

    # ---- memory ----------------------------------------------------------------------------

    def _loaded(self, kind: str) -> Any:
        """The pipeline of ``kind`` if it is loaded (never loads one)."""
        pipe = self._upscale if kind == "upscale" else self._caption
        return pipe or _shared.get((kind, self.device, str(self.weights_dir)))

    def _total_gb(self) -> float | None:
        if self.vram_gb is not None:
            return self.vram_gb
        if self.device.startswith("cuda"):
            import torch

            return float(torch.cuda.get_device_properties(self.device).total_memory) / 1e9
        return None  # the CPU: nothing to plan

    def placement(self) -> Placement | None:
        """Where the models go: measured from the loaded ones, else from the baked files."""
        total = self._total_gb()
        if total is None:
            return None
        pipes = {k: self._loaded(k) for k in ("upscale", "caption")}
        if all(p is not None for p in pipes.values()):
            sizes = {k: p.weight_bytes() / 1e9 for k, p in pipes.items()}
        else:
            sizes = weights_on_disk_gb(self.weights_dir)
        return plan(total, sizes) if sizes else None

    def _make_room(self, kind: str) -> None:
        """Before a GPU call: park the other model when both do not fit together."""
        other = self._loaded("caption" if kind == "upscale" else "upscale")
        if other is None:
            return
        placement = self.placement()
        if placement is None or placement.together:
            return
        other.park()
        self._loaded(kind).unpark()

    async def _refine_batched(self, job: Any, options: RefineOptions) -> Any:
        """Queue the tile; tiles of one job (same options object) arriving together share a
        pipeline call of up to ``batch_size`` tiles (flushed when full or after a short wait)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        key = id(options)
        queue = self._pending.setdefault(key, (options, []))[1]
        queue.append((job, future))
        if len(queue) >= self.batch_size:
            self._flush(key)
        elif len(queue) == 1:
            loop.call_later(BATCH_WINDOW_S, self._flush, key)
        return await future

    def _flush(self, key: int) -> None:
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        options, items = entry

        async def run() -> None:
            try:
                outs = await asyncio.to_thread(self._refine_now, [j for j, _ in items], options)
            except Exception as exc:  # every waiting tile gets the failure
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            for (_, fut), out in zip(items, outs, strict=True):
                if not fut.done():
                    fut.set_result(out)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self, remote_id: str, tile: TileTask) -> RefineResult | None:
        """Nothing runs remotely here: an interrupted tile is refined again."""
        return None

    async def resume_caption(self, remote_id: str, tile_id: str) -> CaptionResult | None:
        """Nothing runs remotely here: an interrupted caption is made again."""
        return None

    async def list_models(self) -> list[ModelInfo]:
        from workers.upscale import models

        return models.list_models(self.lora_dir).models

    async def upload_model(self, filename: str, data: bytes) -> ModelInfo:
        from workers.upscale import models

        req = UploadModelRequest(filename=filename, file_b64=base64.b64encode(data).decode())
        done = await asyncio.to_thread(models.upload, req, self.lora_dir)
        assert done.model is not None  # a one-chunk upload is complete
        return done.model

    async def delete_model(self, name: str) -> None:
        from workers.upscale import models

        await asyncio.to_thread(models.delete, name, self.lora_dir)

    async def start_import(self, request: ImportModelRequest) -> str:
        """Download in a thread of this process (the worker's own code); ids live in memory."""
        from workers.common import cancel
        from workers.upscale import lora_import

        import_id = secrets.token_hex(8)
        state = self._imports[import_id] = RemoteImport("running")
        stop = self._import_stops[import_id] = cancel.StopFlag()

        def report(value: Any) -> None:
            state.progress = ImportProgress.model_validate(value)

        def work() -> Any:
            with cancel.watching(stop):
                return lora_import.import_model(request, self.lora_dir, report)

        async def run() -> None:
            try:
                done = await asyncio.to_thread(work)
                state.state, state.model, state.version = "done", done.model, done.version
            except cancel.Canceled:
                state.state = "canceled"
            except AatError as exc:
                state.state, state.error = "failed", exc
            except Exception as exc:  # a bug: still an answer for the poller
                log.exception("LoRA import %s crashed", import_id)
                state.state, state.error = "failed", WorkerError(
                    f"the import crashed: {type(exc).__name__}", code="worker_internal")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._import_tasks[import_id] = task
        task.add_done_callback(lambda _: (self._import_stops.pop(import_id, None),
                                          self._import_tasks.pop(import_id, None)))
        return import_id

    async def cancel_import(self, remote_id: str) -> None:
        """Tell the download to stop and wait until it has removed what it had begun."""
        from workers.common import cancel

        stop, task = self._import_stops.get(remote_id), self._import_tasks.get(remote_id)
        if stop is None or task is None:
            return
        stop.set()
        with contextlib.suppress(TimeoutError):  # bounded; it cleans up whenever it ends
            await asyncio.wait_for(asyncio.shield(task), cancel.CLEANUP_S)

    async def import_status(self, remote_id: str) -> RemoteImport:
        state = self._imports.get(remote_id)
        if state is None:
            return RemoteImport("failed", error=WorkerError(
                f"import {remote_id} is not known to this process (restarted?); look for the "
                "LoRA in the list, else import it again", code="import_lost"))
        return state

    async def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {"status": "ok", "backend": self.name, "device": self.device}
        loaded = self._upscale or _shared.get(("upscale", self.device, str(self.weights_dir)))
        if loaded is not None:
            info.update(loaded.health())
        else:
            info["model_loaded"] = False
        placement = self.placement()
        if placement is not None:
            info["placement"] = placement.describe()
        return info

    async def aclose(self) -> None:
        """Nothing to close: loaded pipelines stay resident for the next job."""


def _settings(options: RefineOptions, batch_size: int) -> Any:
    from PIL import Image

    from workers.upscale.pipeline import RefineSettings

    style = options.ip_adapter_image
    return RefineSettings(
        **options.diffusion_kwargs(),
        ip_adapter_image=Image.fromarray(style) if style is not None else None,
        batch_size=batch_size,
    )


def _accounting(start: float) -> CallAccounting:
    return CallAccounting(execution_ms=int((time.monotonic() - start) * 1000), attempts=1)


def _check_runtime(device: str) -> None:
    """Fail fast with the fix when this machine cannot run the pipelines."""
    try:
        import diffusers  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the local backend needs the GPU packages ({exc.name} is missing); install them "
            "with: pip install 'ai-assets-toolbox[gpu]', or use --backend runpod or none",
            code="backend_unavailable_local") from exc
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "the local backend needs a CUDA GPU and none was found; use --backend runpod, "
            "or --backend none for a base upscale", code="backend_unavailable_local")


def _tiny() -> bool:
    return os.environ.get("AAT_WORKER_TINY") == "1"


def _load(kind: str, device: str, weights_dir: Path, lora_dir: Path) -> Any:
    """Load a pipeline: baked weights, or tiny random parts with AAT_WORKER_TINY=1 on CPU."""
    if _tiny() and device == "cpu":
        log.warning("AAT_WORKER_TINY=1: tiny random %s pipeline, outputs are noise", kind)
        return _load_tiny(kind, lora_dir)
    if kind == "upscale":
        from workers.upscale import weights
        from workers.upscale.pipeline import UpscalePipeline

        baked = weights_dir / weights.DIFFUSERS_FOLDER  # or the single file, not yet converted
        _require(baked if baked.is_dir() else weights.local_path("base", weights_dir),
                 "upscale", weights_dir)
        return UpscalePipeline.from_weights(weights_dir, device=device, lora_dir=lora_dir)
    from workers.caption import weights as caption_weights
    from workers.caption.pipeline import CaptionPipeline

    _require(caption_weights.local_path("caption", weights_dir), "caption", weights_dir)
    return CaptionPipeline.from_weights(weights_dir, device=device)


def _load_tiny(kind: str, lora_dir: Path) -> Any:
    if kind == "upscale":
        from workers.tiny import upscale as tiny

        return tiny.build_pipeline(lora_dir=lora_dir)
    from workers.caption.pipeline import CaptionPipeline
    from workers.tiny import caption as tiny_caption

    return CaptionPipeline.from_components(tiny_caption.build_components())


def _require(path: Path, worker: str, root: Path) -> None:
    if not path.is_dir() or not any(path.iterdir()):
        raise ConfigError(
            f"{worker} weights are missing in {path}; download them once with: "
            f"python -m workers.{worker}.weights {root}", code="weights_missing")
