"""RunPod handler of the caption worker: ``caption`` (a batch of tiles) and ``health``.

Thin: contract in, one batched pipeline call, contract out. The model loads once per
container. ``AAT_WORKER_TINY=1`` builds a tiny random Qwen3-VL instead (smoke tests, emulator).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from service.core.contracts import (
    Caption,
    CaptionRequest,
    CaptionResponse,
    HealthResponse,
    caption_worker_request,
)
from workers.common.envelope import RecentResults, run_action
from workers.common.imageref import decode_image_ref

log = logging.getLogger(__name__)
_lock = threading.Lock()
_pipeline: Any = None
_recent = RecentResults(size=16)  # outputs by request_key (duplicate deliveries)


def get_pipeline() -> Any:
    global _pipeline
    with _lock:
        if _pipeline is None:
            _pipeline = _load()
        return _pipeline


def _load() -> Any:
    from workers.caption.pipeline import CaptionPipeline

    if os.environ.get("AAT_WORKER_TINY") == "1":
        from workers.tiny import caption as tiny

        log.warning("AAT_WORKER_TINY=1: random tiny Qwen3-VL, captions are random words")
        return CaptionPipeline.from_components(tiny.build_components(), device="cpu")
    return CaptionPipeline.from_weights(device=os.environ.get("AAT_DEVICE", "cuda"))


def caption(req: CaptionRequest) -> CaptionResponse:
    images = [decode_image_ref(t.image) for t in req.tiles]
    texts = get_pipeline().caption(images, req.instruction, req.max_new_tokens)
    return CaptionResponse(captions=[Caption(tile_id=t.tile_id, caption=text)
                                     for t, text in zip(req.tiles, texts, strict=True)])


def health(_req: Any) -> HealthResponse:
    return HealthResponse(status="ok", worker="caption", **get_pipeline().health())


ACTIONS = {"caption": caption, "health": health}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, caption_worker_request, ACTIONS, _recent)


if __name__ == "__main__":
    import runpod

    from service.core.logs import configure_logging

    configure_logging("INFO", os.environ.get("AAT_LOG_FORMAT", "text"))
    get_pipeline()  # load before taking jobs: a broken image fails fast
    runpod.serverless.start({"handler": handler})
