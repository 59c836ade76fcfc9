"""RunPod handler of the caption worker: ``caption`` (a batch of tiles) and ``health``.

Thin: contract in, one batched pipeline call, contract out. The model loads once per
container. ``AAT_WORKER_TINY=1`` builds a tiny random Qwen3-VL instead (smoke tests, emulator).
"""

from __future__ import annotations

import logging
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
from workers.common.resident import Resident, device, serve

log = logging.getLogger(__name__)
_recent = RecentResults(size=16)  # outputs by request_key (duplicate deliveries)


def _real() -> Any:
    from workers.caption.pipeline import CaptionPipeline

    return CaptionPipeline.from_weights(device=device())


def _tiny() -> Any:
    from workers.caption.pipeline import CaptionPipeline
    from workers.tiny import caption as tiny

    return CaptionPipeline.from_components(tiny.build_components(), device="cpu")


pipeline: Resident[Any] = Resident(_real, _tiny, "random tiny Qwen3-VL, captions are random words")


def caption(req: CaptionRequest) -> CaptionResponse:
    images = [decode_image_ref(t.image) for t in req.tiles]
    texts = pipeline.get().caption(images, req.instruction, req.max_new_tokens)
    return CaptionResponse(captions=[Caption(tile_id=t.tile_id, caption=text)
                                     for t, text in zip(req.tiles, texts, strict=True)])


def health(_req: Any) -> HealthResponse:
    return HealthResponse(status="ok", worker="caption", **pipeline.get().health())


ACTIONS = {"caption": caption, "health": health}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, caption_worker_request, ACTIONS, _recent)


if __name__ == "__main__":
    serve(handler, pipeline)
