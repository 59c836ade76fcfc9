"""Image references for the workers: the core codec (:mod:`service.core.imageref`) plus
fetching ``url`` references over HTTP, which only the workers do.

Bad data or an unreachable URL raises :class:`~service.core.errors.ImageError` with a code.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
from PIL import Image

from service.core import imageref as _codec
from service.core.contracts import ImageRef
from service.core.errors import ImageError
from service.core.imageref import (
    MAX_REF_PIXELS,
    array_to_image,
    encode_image_ref,
    encode_smallest,
    image_to_array,
)

URL_TIMEOUT_S = 30.0

__all__ = ["MAX_REF_PIXELS", "array_to_image", "decode_image_ref", "decode_to_array",
           "encode_image_ref", "encode_smallest", "fetch_url", "image_to_array", "ref_bytes"]


def fetch_url(url: str) -> bytes:
    """The bytes at ``url`` (redirects followed); a failure is a retryable ImageError."""
    try:
        resp = httpx.get(url, timeout=URL_TIMEOUT_S, follow_redirects=True)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise ImageError(
            f"could not fetch image URL ({type(exc).__name__}); check that the link is reachable",
            code="image_corrupt",
            retryable=True,
        ) from exc
    return resp.content


def ref_bytes(ref: ImageRef | dict[str, Any]) -> bytes:
    """The encoded file bytes a reference points to (URLs fetched)."""
    return _codec.ref_bytes(ref, fetch_url)


def decode_image_ref(ref: ImageRef | dict[str, Any]) -> Image.Image:
    """Decode a reference to a loaded PIL image (mode as stored; URLs fetched)."""
    return _codec.decode_image_ref(ref, fetch_url)


def decode_to_array(ref: ImageRef | dict[str, Any]) -> np.ndarray:
    """Decode a reference straight to ``(H, W, 3) uint8`` RGB (URLs fetched)."""
    return _codec.decode_to_array(ref, fetch_url)
