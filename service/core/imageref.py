"""Image references on the wire: encode/decode :class:`ImageRef` to and from PIL / numpy.

An :class:`~service.core.contracts.ImageRef` is either inline base64 bytes of a PNG/WebP file
(no data-URI prefix) or an http(s) URL. This module owns the conversions, shared by the GPU
workers, the echo worker of the emulator and the service's RunPod backend (it lives in the core
so the service never imports ``workers``):

- :func:`decode_image_ref` ``ImageRef | dict -> PIL.Image``; a URL is read with the ``fetch``
  the caller passes (the workers pass an HTTP fetcher, ``workers.common.imageref``); pure
  otherwise,
- :func:`encode_image_ref` ``PIL.Image | ndarray -> ImageRef`` (PNG by default, lossless),
- :func:`image_to_array` / :func:`array_to_image` for ``(H, W, 3) uint8`` RGB arrays.

Bad data raises :class:`~service.core.errors.ImageError` with a code, never a bare PIL error.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.core.contracts import ImageRef
from service.core.errors import ImageError

# A tile is at most 4096² pixels; refuse anything decoding to more (decompression bombs).
MAX_REF_PIXELS = 4096 * 4096 * 2
Fetch = Callable[[str], bytes]  # url -> bytes; raises ImageError when it cannot


def _as_ref(ref: ImageRef | dict[str, Any]) -> ImageRef:
    if isinstance(ref, ImageRef):
        return ref
    try:
        return ImageRef.model_validate(ref)
    except ValueError as exc:
        raise ImageError(
            f"invalid image reference: {exc}; send exactly one of b64 or url",
            code="image_corrupt",
        ) from exc


def ref_bytes(ref: ImageRef | dict[str, Any], fetch: Fetch | None = None) -> bytes:
    """The encoded file bytes a reference points to (a URL is read with ``fetch``)."""
    r = _as_ref(ref)
    if r.url is not None:
        if fetch is None:
            raise ImageError("image URLs are not accepted here; send the image inline (b64)",
                             code="image_corrupt")
        return fetch(r.url)
    try:
        return base64.b64decode(r.b64 or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            "image b64 is not valid base64; send the raw file bytes base64-encoded, no data: prefix",
            code="image_corrupt",
        ) from exc


def decode_image_ref(ref: ImageRef | dict[str, Any], fetch: Fetch | None = None,
                     ) -> Image.Image:
    """Decode a reference to a loaded PIL image (mode as stored)."""
    data = ref_bytes(ref, fetch)
    if not data:
        raise ImageError("image reference holds no bytes; send a PNG or WebP file", code="image_empty")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_REF_PIXELS:
            raise ImageError(
                f"image of {img.width}x{img.height} is too large for one tile; use smaller tiles",
                code="image_too_large",
            )
        img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"image bytes could not be decoded ({exc}); send a valid PNG or WebP file",
            code="image_corrupt",
        ) from exc
    return img


def encode_image_ref(
    img: Image.Image | np.ndarray, fmt: Literal["png", "webp"] = "png"
) -> ImageRef:
    """Encode an image inline (lossless PNG by default; WebP is lossless too)."""
    pil = array_to_image(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    if fmt == "webp":
        pil.save(buf, format="WEBP", lossless=True)
    else:
        pil.save(buf, format="PNG", compress_level=1)
    return ImageRef(b64=base64.b64encode(buf.getvalue()).decode("ascii"))


def encode_smallest(img: Image.Image | np.ndarray) -> ImageRef:
    """Lossless PNG or lossless WebP, whichever is smaller (WebP usually, by 20-40% on art):
    a tile that travels inline has to fit RunPod's request limit."""
    png, webp = encode_image_ref(img, "png"), encode_image_ref(img, "webp")
    return webp if len(webp.b64 or "") < len(png.b64 or "") else png


def image_to_array(img: Image.Image) -> np.ndarray:
    """PIL image → ``(H, W, 3) uint8`` RGB array."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def array_to_image(arr: np.ndarray) -> Image.Image:
    """``(H, W, 3)`` or ``(H, W)`` uint8 array → PIL image."""
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ImageError(
            f"expected a uint8 (H, W[, C]) array, got {arr.dtype} {arr.shape}",
            code="image_unsupported",
        )
    return Image.fromarray(np.ascontiguousarray(arr))


def decode_to_array(ref: ImageRef | dict[str, Any], fetch: Fetch | None = None) -> np.ndarray:
    """Decode a reference straight to ``(H, W, 3) uint8`` RGB."""
    return image_to_array(decode_image_ref(ref, fetch))
