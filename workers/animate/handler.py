"""RunPod handler of the animate worker: ``animate`` (one frame) and ``health``.

Thin: contract in, one pipeline call, contract out. The model loads once per container.
``AAT_WORKER_TINY=1`` builds tiny random Qwen-Image-Edit components instead (smoke tests).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from service.core.contracts import (
    AnimateRequest,
    AnimateResponse,
    HealthResponse,
    animate_worker_request,
)
from workers.common.envelope import RecentResults, run_action
from workers.common.imageref import decode_image_ref, encode_image_ref

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
    from workers.animate.pipeline import AnimatePipeline

    if os.environ.get("AAT_WORKER_TINY") == "1":
        from workers.tiny import animate as tiny

        log.warning("AAT_WORKER_TINY=1: random tiny Qwen-Image-Edit, frames are noise")
        return AnimatePipeline.from_components(tiny.build_components(), device="cpu")
    return AnimatePipeline.from_weights(device=os.environ.get("AAT_DEVICE", "cuda"))


def animate(req: AnimateRequest) -> AnimateResponse:
    frame = get_pipeline().edit(decode_image_ref(req.image), req.prompt, seed=req.seed,
                                steps=req.steps, true_cfg_scale=req.true_cfg_scale,
                                negative_prompt=req.negative_prompt)
    return AnimateResponse(frame_id=req.frame_id, image=encode_image_ref(frame, req.output_format),
                           seed_used=req.seed)


def health(_req: Any) -> HealthResponse:
    return HealthResponse(status="ok", worker="animate", **get_pipeline().health())


ACTIONS = {"animate": animate, "health": health}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, animate_worker_request, ACTIONS, _recent)


if __name__ == "__main__":
    import runpod

    logging.basicConfig(level=logging.INFO)
    get_pipeline()  # load before taking jobs: a broken image fails fast
    runpod.serverless.start({"handler": handler})
