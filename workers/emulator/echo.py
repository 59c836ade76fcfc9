"""RunPod handler of the echo worker: every action of the upscale and caption workers, on CPU.

It speaks the real contracts of :mod:`service.core.contracts`, so a client cannot tell it from
a GPU worker except by the pixels:

- ``upscale`` returns each tile at its own size with a small deterministic tint derived from
  its seed (red channel + ``1 + seed % 4``, saturating) so a test can see every tile was
  processed, and by which seed; ``make_handler(tint=False)`` returns tiles unchanged.
- ``caption`` returns a caption derived from the image (size and mean colour).
- ``list_models`` / ``upload_model`` / ``delete_model`` / ``import_model`` manage safetensors
  LoRAs in a temporary folder (the upscale worker's own code: :mod:`workers.upscale.models`,
  :mod:`workers.upscale.lora_import`).
- ``health`` reports ``worker="echo"``.

Failures come back as structured errors through :func:`workers.common.envelope.run_action`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from service.core.contracts import (
    Caption,
    CaptionRequest,
    CaptionResponse,
    DeleteModelRequest,
    HealthResponse,
    TileOut,
    UpscaleRequest,
    UpscaleResponse,
    UpscaleWorkerRequest,
)
from workers.common.cancel import cancellable
from workers.common.envelope import run_action
from workers.common.imageref import decode_to_array, encode_image_ref
from workers.upscale import lora_import, models

EchoRequest = UpscaleWorkerRequest | CaptionRequest
_adapter: TypeAdapter[Any] = TypeAdapter(EchoRequest)


def tint_amount(seed: int) -> int:
    """How much the echo worker adds to the red channel of a tile refined with ``seed``."""
    return 1 + seed % 4


def tint(tile: np.ndarray, seed: int) -> np.ndarray:
    """``(H, W, 3) uint8`` tile with its red channel raised by :func:`tint_amount` (clipped)."""
    out = tile.astype(np.int16)
    out[..., 0] += tint_amount(seed)
    return np.clip(out, 0, 255).astype(np.uint8)


def describe(tile: np.ndarray) -> str:
    """The echo caption: size and mean colour of the tile."""
    r, g, b = (int(round(float(v))) for v in tile.reshape(-1, 3).mean(axis=0))
    return f"a {tile.shape[1]}x{tile.shape[0]} tile, mean colour rgb({r}, {g}, {b})"


def make_handler(*, tint_tiles: bool = True, models_dir: Path | None = None
                 ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """A fresh echo handler; LoRAs live in ``models_dir`` (default: a new temp folder)."""
    folder = models_dir or Path(tempfile.mkdtemp(prefix="aat-echo-loras-"))

    def upscale(req: UpscaleRequest) -> UpscaleResponse:
        for lora in req.loras:  # refused like the real worker: lora_not_found, not retryable
            models.resolve(lora.name, folder)
        out = []
        for t in req.tiles:
            arr = decode_to_array(t.image)
            arr = tint(arr, t.seed) if tint_tiles else arr
            out.append(TileOut(tile_id=t.tile_id, image=encode_image_ref(arr, req.output_format),
                               seed_used=t.seed))
        return UpscaleResponse(tiles=out)

    def caption(req: CaptionRequest) -> CaptionResponse:
        return CaptionResponse(captions=[
            Caption(tile_id=t.tile_id, caption=describe(decode_to_array(t.image)))
            for t in req.tiles
        ])

    def delete_model(req: DeleteModelRequest) -> Any:
        return models.delete(req.name, folder)

    actions: dict[str, Callable[[Any], Any]] = {
        "upscale": upscale,
        "caption": caption,
        "list_models": lambda _req: models.list_models(folder),
        "upload_model": lambda req: models.upload(req, folder),
        "delete_model": delete_model,
        "import_model": lambda req: lora_import.import_model(req, folder),
        "health": lambda _req: HealthResponse(status="ok", worker="echo", model_loaded=True),
    }

    def handle(job: dict[str, Any]) -> dict[str, Any]:
        return run_action(job, _adapter, actions)

    return cancellable(handle)  # like the real worker: a cancel stops an import


handler = make_handler()
