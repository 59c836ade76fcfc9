"""One format table (service.core.formats): every reader of a suffix, format name or media
type agrees with it, so no second copy can drift."""

from __future__ import annotations

import io
import mimetypes
from typing import get_args

import numpy as np
import pytest
from PIL import Image

from service.core import formats
from service.core.imaging import (
    ImageLimits,
    encode_image,
    format_for_suffix,
    load_image,
    output_format_for,
)
from service.core.params import UpscaleParams


def test_the_table() -> None:
    assert formats.INPUT_FORMATS == ("PNG", "WEBP", "JPEG", "TGA", "DDS", "BMP", "GIF")
    assert formats.OUTPUT_FORMATS == ("png", "webp", "jpeg", "tga", "dds")
    assert {".png", ".webp", ".jpg", ".jpeg", ".tga", ".dds", ".bmp", ".gif"} == formats.INPUT_SUFFIXES
    assert formats.OUTPUT_SUFFIXES == (".png", ".webp", ".jpg", ".jpeg", ".tga", ".dds")
    assert formats.suffix_for("jpeg") == ".jpg" and formats.input_suffix("GIF") == ".gif"
    assert formats.by_suffix(".JPEG").name == "jpeg"  # type: ignore[union-attr]
    assert formats.by_media_type("image/webp; q=1").suffix == ".webp"  # type: ignore[union-attr]
    assert formats.media_type_for_suffix(".exe") == "application/octet-stream"


def test_params_offer_exactly_the_formats_we_write() -> None:
    field = UpscaleParams.model_fields["output_format"]
    assert get_args(field.annotation) == ("auto", *formats.OUTPUT_FORMATS)


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_every_row_is_true_to_pillow_and_to_our_decoder(fmt: formats.ImageFormat) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt.pillow)
    loaded = load_image(buf.getvalue(), limits=ImageLimits())
    assert loaded.format == fmt.pillow  # we read every input format of the table
    assert output_format_for(fmt.pillow) == (fmt.name if fmt.writable else "png")
    for suffix in fmt.suffixes:
        assert Image.registered_extensions()[suffix] == fmt.pillow
        assert format_for_suffix(suffix.upper()) == (fmt.name if fmt.writable else None)
        guessed = mimetypes.guess_type(f"x{suffix}")[0]
        assert guessed in (fmt.media_type, None, "image/x-targa", "image/x-ms-bmp")
    if fmt.writable:  # and we write what the row says
        out = encode_image(rgb, None, fmt.name)
        assert Image.open(io.BytesIO(out)).format == fmt.pillow


def test_a_refused_file_names_every_format_we_take() -> None:
    from service.core.errors import ImageError

    with pytest.raises(ImageError) as info:
        load_image(b"not an image at all, just text", limits=ImageLimits())
    assert formats.INPUT_NAMES in info.value.message
    assert all(f.pillow.lower() in formats.INPUT_NAMES.lower() for f in formats.FORMATS)
