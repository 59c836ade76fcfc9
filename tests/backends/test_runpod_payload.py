"""What fits in one RunPod request: tile sizes refused at submit, tiles sent in the smaller
lossless encoding, results asked for in lossless WebP (RunPod drops oversized payloads)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.backends.runpod.client import MAX_RUN_BYTES
from service.backends.runpod.limits import (
    MAX_INLINE_TILE_SIDE,
    check_tile_size,
    worst_case_b64_bytes,
)
from service.core.errors import ParamsError
from workers.common.imageref import decode_to_array, encode_smallest


def test_the_largest_allowed_tile_fits_even_when_it_does_not_compress() -> None:
    assert worst_case_b64_bytes(MAX_INLINE_TILE_SIDE) < MAX_RUN_BYTES - 50_000  # + the JSON
    assert worst_case_b64_bytes(2048) > MAX_RUN_BYTES
    check_tile_size(1024)
    with pytest.raises(ParamsError) as info:
        check_tile_size(2048)
    assert info.value.code == "tile_too_large" and "1536" in info.value.message


def test_a_detailed_2048_tile_really_exceeds_the_limit_as_png() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    assert len(encode_smallest(noise).b64 or "") > MAX_RUN_BYTES


def test_tiles_travel_in_the_smaller_lossless_encoding() -> None:
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    art = np.stack([np.add.outer(ramp, ramp) // 2, np.tile(ramp, (256, 1)),
                    np.full((256, 256), 90, np.uint8)], axis=-1).astype(np.uint8)
    ref = encode_smallest(art)
    data = base64.b64decode(ref.b64 or "")
    png = io.BytesIO()
    Image.fromarray(art).save(png, "PNG", compress_level=1)
    assert len(data) <= len(png.getvalue())
    assert data[:4] == b"RIFF"  # WebP won on this art
    assert np.array_equal(decode_to_array(ref), art)  # lossless
