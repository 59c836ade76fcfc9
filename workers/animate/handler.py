"""RunPod handler of the animate worker: ``animate`` (one frame) and ``health``.

Thin: contract in, one pipeline call, contract out. The model loads once per container.
``AAT_WORKER_TINY=1`` builds tiny random Qwen-Image-Edit components instead (smoke tests).
"""

from __future__ import annotations

import logging
from typing import Any

from service.core.contracts import (
    AnimateRequest,
    AnimateResponse,
    HealthResponse,
    animate_worker_request,
)
from workers.common.envelope import RecentResults, run_action
from workers.common.imageref import decode_image_ref, encode_image_ref
from workers.common.resident import Resident, device, serve

log = logging.getLogger(__name__)
_recent = RecentResults(size=16)  # outputs by request_key (duplicate deliveries)


def _real() -> Any:
    from workers.animate.pipeline import AnimatePipeline

    return AnimatePipeline.from_weights(device=device())


def _tiny() -> Any:
    from workers.animate.pipeline import AnimatePipeline
    from workers.tiny import animate as tiny

    return AnimatePipeline.from_components(tiny.build_components(), device="cpu")


pipeline: Resident[Any] = Resident(_real, _tiny, "random tiny Qwen-Image-Edit, frames are noise")


def animate(req: AnimateRequest) -> AnimateResponse:
    frame = pipeline.get().edit(decode_image_ref(req.image), req.prompt, seed=req.seed,
                                steps=req.steps, true_cfg_scale=req.true_cfg_scale,
                                negative_prompt=req.negative_prompt)
    return AnimateResponse(frame_id=req.frame_id, image=encode_image_ref(frame, req.output_format),
                           seed_used=req.seed)


def health(_req: Any) -> HealthResponse:
    return HealthResponse(status="ok", worker="animate", **pipeline.get().health())


ACTIONS = {"animate": animate, "health": health}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, animate_worker_request, ACTIONS, _recent)


if __name__ == "__main__":
    serve(handler, pipeline)
