"""Echo stand-ins for the image-edit model, on CPU: our animate worker and RunPod's public
Qwen-Image-Edit endpoint.

Both answer with a plausible frame: the sprite found on the key colour (everything farther
than 48 from the corner pixel's colour), moved by a few pixels that depend on the seed (a
stride and a hop, like a pose change) and drawn on the exact key colour at twice the size
(as a model answering at its own resolution would). The pixels of the sprite are kept, so a
test can check the palette and the alignment a real model would only approximate.

* :data:`handler` speaks :class:`~service.core.contracts.AnimateRequest` (action ``animate``).
* :data:`public_handler` speaks the public endpoint's input (``prompt``, ``image`` URL,
  ``seed``): it fetches the URL (``FAILED`` with ``Invalid image URL`` when that fails, as the
  cloud does; ``make_public_handler(cloud_network=True)`` also refuses loopback and private
  hosts, which the cloud cannot reach) and returns ``{"image_url", "cost"}`` on the emulator's own file shelf
  (``GET /_emulator/files/{name}``, see :mod:`workers.emulator.files`).
"""

from __future__ import annotations

import io
import ipaddress
from typing import Any

import httpx
import numpy as np
from PIL import Image
from pydantic import ValidationError

from service.core.contracts import (
    AnimateRequest,
    AnimateResponse,
    HealthResponse,
    PublicEditInput,
    animate_worker_request,
)
from workers.common.envelope import run_action
from workers.common.imageref import decode_to_array, encode_image_ref
from workers.emulator.files import SHELF


def pose(canvas: np.ndarray, seed: int, scale: int = 2) -> np.ndarray:
    """The echo frame: sprite moved by ``(seed % 5 - 2, -(seed // 5 % 4))``, ``scale``x size."""
    key = canvas[0, 0].astype(np.int16)
    sprite = np.abs(canvas.astype(np.int16) - key).max(axis=2) > 48
    dx, dy = seed % 5 - 2, -((seed // 5) % 4)
    out = np.broadcast_to(canvas[0, 0], canvas.shape).copy()
    h, w = sprite.shape
    ys, xs = np.nonzero(sprite)
    ty, tx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
    out[ty, tx] = canvas[ys, xs]
    return np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)


def _animate(req: AnimateRequest) -> AnimateResponse:
    frame = pose(decode_to_array(req.image), req.seed)
    return AnimateResponse(frame_id=req.frame_id, image=encode_image_ref(frame, req.output_format),
                           seed_used=req.seed)


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return run_action(job, animate_worker_request, {
        "animate": _animate,
        "health": lambda _req: HealthResponse(status="ok", worker="echo", model_loaded=True),
    })


def make_public_handler(*, cloud_network: bool = False) -> Any:
    """RunPod's public ``qwen-image-edit``: errors are plain strings there, not our JSON.

    ``cloud_network=True`` sees the network as the cloud does: loopback and private
    addresses (a MinIO on your machine) are out of reach, so their URLs are invalid.
    """

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        try:
            inp = PublicEditInput.model_validate(job.get("input"))
        except ValidationError as exc:
            return {"error": f"Invalid input: {exc.errors()[0].get('msg')}"}
        if cloud_network and _private(inp.image):
            return {"error": "Invalid image URL"}
        return _public_edit(inp)

    return handler


def _private(url: str) -> bool:
    host = httpx.URL(url).host
    try:
        return ipaddress.ip_address(host).is_private or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost",) or host.endswith((".local", ".internal"))


def _public_edit(inp: PublicEditInput) -> dict[str, Any]:
    try:
        resp = httpx.get(inp.image, timeout=10, follow_redirects=True)
        resp.raise_for_status()
        with Image.open(io.BytesIO(resp.content)) as im:
            canvas = np.asarray(im.convert("RGB"))
    except (httpx.HTTPError, OSError):
        return {"error": "Invalid image URL"}
    buf = io.BytesIO()
    Image.fromarray(pose(canvas, max(inp.seed, 0))).save(buf, format="PNG")
    return {"image_url": SHELF.put(buf.getvalue(), ".png"), "cost": 0.02}


public_handler = make_public_handler()
