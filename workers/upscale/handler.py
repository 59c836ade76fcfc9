"""RunPod handler of the upscale worker: ``upscale``, ``list_models``, ``upload_model``,
``delete_model``, ``import_model`` (download a LoRA by URL, reporting progress; a cancel stops
it with nothing kept), ``health``. Thin: contracts in, pipeline/models call, contracts out.
``handle`` is the plain call; ``handler`` (what RunPod and the emulator run) is the same under
:func:`workers.common.cancel.cancellable`, so cancelling a RunPod job reaches the action.

The pipeline loads once per container (before the first job when started as a script).
``AAT_WORKER_TINY=1`` builds tiny random components instead of loading weights, for the SDK's
``--test_input`` smoke test, the emulator and CPU tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from service.core.contracts import (
    DeleteModelRequest,
    DeleteModelResponse,
    HealthResponse,
    ImportModelRequest,
    ImportModelResponse,
    ListModelsRequest,
    ListModelsResponse,
    TileOut,
    UploadModelRequest,
    UploadModelResponse,
    UpscaleRequest,
    UpscaleResponse,
    upscale_worker_request,
)
from service.core.errors import AatError, ImageError
from workers.common.cancel import cancellable
from workers.common.envelope import RecentResults, run_action
from workers.common.imageref import decode_image_ref, encode_image_ref
from workers.common.resident import Resident, device, serve
from workers.upscale import lora_import, models

log = logging.getLogger(__name__)
MAX_OUTPUT_BYTES = 9_500_000  # RunPod drops results over 10 MB (/run) without an error


def _memory_key(request: Any) -> str | None:
    """``request_key`` plus the state of the LoRA files it names (another worker sharing the
    volume may have replaced one); None (do not remember) when a LoRA is missing."""
    key = getattr(request, "request_key", None)
    if key is None or not getattr(request, "loras", None):
        return key
    try:
        stats = [models.resolve(lora.name).stat() for lora in request.loras]
    except AatError:
        return None
    return key + "|" + ",".join(f"{s.st_mtime_ns}:{s.st_size}" for s in stats)


_recent = RecentResults(size=16, key_of=_memory_key)  # outputs of repeated requests


def _real() -> Any:
    from workers.upscale.pipeline import UpscalePipeline

    return UpscalePipeline.from_weights(device=device())


def _tiny() -> Any:
    from workers.tiny import upscale as tiny

    return tiny.build_pipeline()


pipeline: Resident[Any] = Resident(_real, _tiny, "random tiny SDXL components, outputs are noise")


def upscale(req: UpscaleRequest) -> UpscaleResponse:
    from workers.upscale.pipeline import RefineSettings, TileJob

    tiles = [TileJob(t.tile_id, decode_image_ref(t.image).convert("RGB"), t.prompt, t.seed)
             for t in req.tiles]
    style = decode_image_ref(req.ip_adapter_image) if req.ip_adapter_image else None
    settings = RefineSettings(**req.diffusion_kwargs(), ip_adapter_image=style,
                              batch_size=req.batch_size)
    images = pipeline.get().refine(tiles, settings)
    out = UpscaleResponse(tiles=[
        TileOut(tile_id=t.tile_id, image=encode_image_ref(img, req.output_format),
                seed_used=t.seed)
        for t, img in zip(tiles, images, strict=True)
    ])
    _check_output_size(out)
    return out


def _check_output_size(out: UpscaleResponse) -> None:
    """Fail loudly instead of RunPod's silent COMPLETED-without-output for oversized results."""
    limit = int(os.environ.get("AAT_MAX_OUTPUT_BYTES", MAX_OUTPUT_BYTES))
    size = sum(len(t.image.b64 or "") for t in out.tiles)
    if size > limit:
        raise ImageError(
            f"{len(out.tiles)} refined tiles are {size / 1e6:.1f} MB of base64, over the "
            f"{limit / 1e6:.1f} MB RunPod result limit; send fewer tiles per request or "
            "choose output_format webp", code="output_too_large")


def health(_req: Any) -> HealthResponse:
    info = pipeline.get().health()
    return HealthResponse(status="ok", worker="upscale", **info)


def list_models(_req: ListModelsRequest) -> ListModelsResponse:
    return models.list_models()


def upload_model(req: UploadModelRequest) -> UploadModelResponse:
    _recent.clear()  # a replaced LoRA changes what a remembered request would produce
    return models.upload(req)


def delete_model(req: DeleteModelRequest) -> DeleteModelResponse:
    _recent.clear()
    return models.delete(req.name)


def import_model(req: ImportModelRequest) -> ImportModelResponse:
    _recent.clear()
    return lora_import.import_model(req)


ACTIONS: dict[str, Callable[[Any], BaseModel]] = {
    "upscale": upscale, "list_models": list_models, "upload_model": upload_model,
    "delete_model": delete_model, "import_model": import_model, "health": health,
}


def handle(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, upscale_worker_request, ACTIONS, _recent)


handler = cancellable(handle)


if __name__ == "__main__":
    serve(handler, pipeline)
