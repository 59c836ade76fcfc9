"""Image intake and output: formats, modes, alpha, orientation, ICC, refusals, encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from image_factory import bomb_png, encode, noise, raw_png, swapped_primaries_icc
from PIL import Image, ImageFile

from service.core.errors import ImageError  # noqa: E402
from service.core.imaging import (  # noqa: E402
    ImageLimits,
    check_output_size,
    encode_image,
    format_for_suffix,
    load_image,
    normalise,
    output_format_for,
    probe_image,
)

LIMITS = ImageLimits()


def load(data: bytes, **kw: object) -> object:
    return load_image(data, limits=kw.pop("limits", LIMITS), **kw)  # type: ignore[arg-type]


def code_of(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageError) as info:
        load_image(data, limits=limits, filename="x.png")
    assert "\n" not in info.value.message
    return info.value.code


# ---- formats and modes -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "TGA", "BMP", "WEBP"])
def test_lossless_formats_round_trip_exact_pixels(fmt: str) -> None:
    pixels = noise(20, 30)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    img = load(encode(Image.fromarray(pixels), fmt, **kwargs))
    assert img.format == fmt and img.alpha is None
    assert img.rgb.shape == (20, 30, 3) and img.rgb.dtype == np.uint8
    np.testing.assert_array_equal(img.rgb, pixels)


def test_jpeg_loads_close_to_source() -> None:
    smooth = np.dstack([np.tile(np.linspace(0, 255, 64), (48, 1))] * 3).astype(np.uint8)
    img = load(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert img.format == "JPEG" and img.rgb.shape == (48, 64, 3)
    assert np.abs(img.rgb.astype(int) - smooth).mean() < 3


def test_palette_with_transparency_keeps_alpha() -> None:
    pal = Image.new("P", (8, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    px = np.array([[0, 1, 2, 1] * 2] * 4, dtype=np.uint8)
    pal.putdata(px.ravel().tolist())
    pal.info["transparency"] = 0
    img = load(encode(pal, "PNG", transparency=0))
    assert img.mode == "P" and img.alpha is not None
    np.testing.assert_array_equal(img.alpha, np.where(px == 0, 0, 255))
    np.testing.assert_array_equal(img.rgb[0, 1], [255, 0, 0])


def test_gif_first_frame_with_transparency_and_a_warning() -> None:
    frames = [Image.new("P", (6, 6), i) for i in range(3)]
    for f in frames:
        f.putpalette([0, 0, 0, 10, 200, 30, 200, 10, 30] + [0] * 759)
    data = encode(frames[1], "GIF", save_all=True, append_images=[frames[2], frames[0]],
                  transparency=0)
    img = load(data)
    assert img.format == "GIF"
    assert any("first frame" in w for w in img.warnings)
    np.testing.assert_array_equal(img.rgb[3, 3], [10, 200, 30])


def test_la_greyscale_with_alpha() -> None:
    grey, alpha = noise(10, 12, 1, seed=1), noise(10, 12, 1, seed=2)
    img = load(encode(Image.fromarray(np.dstack([grey, alpha])), "PNG"))
    assert img.mode == "LA"
    np.testing.assert_array_equal(img.alpha, alpha)
    np.testing.assert_array_equal(img.rgb[:, :, 0], grey)
    np.testing.assert_array_equal(img.rgb[:, :, 2], grey)


def test_rgba_alpha_exact() -> None:
    rgba = noise(9, 7, 4, seed=3)
    img = load(encode(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(img.alpha, rgba[:, :, 3])
    np.testing.assert_array_equal(img.rgb, rgba[:, :, :3])


def test_webp_and_tga_keep_alpha() -> None:
    rgba = noise(9, 7, 4, seed=4)
    for fmt, kw in (("WEBP", {"lossless": True, "exact": True}), ("TGA", {})):
        img = load(encode(Image.fromarray(rgba), fmt, **kw))
        np.testing.assert_array_equal(img.alpha, rgba[:, :, 3])


def test_16_bit_greyscale_keeps_precision_and_encodes_back() -> None:
    grey = (np.arange(12 * 9).reshape(9, 12) * 600).astype(np.uint16)
    img = load(raw_png(grey, 0, 16))
    assert img.rgb.dtype == np.uint16
    np.testing.assert_array_equal(img.rgb[:, :, 1], grey)
    again = load(encode_image(img.rgb, None, "png"))
    np.testing.assert_array_equal(again.rgb[:, :, 0], grey)


def test_16_bit_colour_is_reduced_with_a_warning() -> None:
    rgb = (noise(5, 6, 3).astype(np.uint16) * 257)
    img = load(raw_png(rgb, 2, 16))
    assert img.rgb.dtype == np.uint8
    assert any("16-bit" in w for w in img.warnings)
    np.testing.assert_array_equal(img.rgb, (rgb // 257).astype(np.uint8))


def test_exif_orientation_is_applied() -> None:
    base = Image.new("RGB", (40, 20), (255, 0, 0))
    base.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = load(encode(base, "JPEG", exif=exif.tobytes(), quality=95))
    assert img.rgb.shape[:2] == (40, 20)
    assert img.rgb[2, 10, 2] > 200 and img.rgb[37, 10, 0] > 200  # blue on top after rotation


def test_icc_profile_converted_to_srgb_keeping_alpha() -> None:
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 77))
    img = load(encode(im, "PNG", icc_profile=swapped_primaries_icc()))
    assert img.icc_converted
    assert img.rgb[0, 0, 2] > 240 and img.rgb[0, 0, 0] < 20  # stored red means sRGB blue
    assert int(img.alpha[0, 0]) == 77


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = load(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert img.mode == "CMYK" and img.rgb.shape == (4, 4, 3)
    assert img.rgb[0, 0, 0] > 200 and img.rgb[0, 0, 1] < 60


# ---- refusals ----------------------------------------------------------------------------

def test_zero_bytes() -> None:
    assert code_of(b"") == "image_empty"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TGA"])
def test_truncated_files(fmt: str) -> None:
    data = encode(Image.fromarray(noise(64, 64)), fmt)
    assert code_of(data[: len(data) * 2 // 3]) == "image_truncated"


def test_png_missing_its_end_is_truncated() -> None:
    data = encode(Image.fromarray(noise(16, 16)), "PNG")
    assert code_of(data[:-12]) == "image_truncated"


def test_text_named_png() -> None:
    assert code_of(b"this is a README, not a sprite\n" * 4) == "image_corrupt"


def test_damaged_header() -> None:
    data = bytearray(encode(Image.fromarray(noise(16, 16)), "PNG"))
    data[20:30] = b"\xff" * 10
    assert code_of(bytes(data)) in ("image_corrupt", "image_truncated")


def test_decompression_bomb_refused_before_decoding() -> None:
    data = bomb_png(100_000)
    assert len(data) < 20_000
    assert code_of(data) == "image_bomb"
    with pytest.raises(ImageError) as info:
        probe_image(data, LIMITS)
    assert info.value.code == "image_bomb"


def test_moderate_bomb_under_pillow_limit_is_ours() -> None:
    data = bomb_png(9000)  # 81 Mpx: Pillow only warns; our 64 Mpx limit refuses it
    assert code_of(data) == "image_bomb"


def test_honest_oversize_input() -> None:
    data = encode(Image.fromarray(noise(80, 100)), "PNG")
    small = ImageLimits(max_input_pixels=10_000_000, max_input_side=64)
    assert code_of(data, small) == "image_too_large"


def test_unsupported_format() -> None:
    assert code_of(encode(Image.fromarray(noise(8, 8)), "TIFF")) == "image_unsupported"


@pytest.mark.parametrize("mode", ["F", "HSV", "LAB"])
def test_unsupported_modes(mode: str) -> None:
    with pytest.raises(ImageError) as info:
        normalise(Image.new(mode, (4, 4)))
    assert info.value.code == "image_unsupported"


def test_32_bit_integer_out_of_range() -> None:
    im = Image.fromarray(np.full((4, 4), 1 << 20, dtype=np.int32))
    with pytest.raises(ImageError) as info:
        normalise(im)
    assert info.value.code == "image_unsupported"


def test_truncated_loading_stays_off_after_imports() -> None:
    import service.pipeline.assembly  # noqa: F401
    import service.upscalers.registry  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_probe_reads_only_the_header() -> None:
    data = bytearray(encode(Image.fromarray(noise(30, 40)), "PNG"))
    data[60:200] = b"\x00" * 140  # damage the compressed pixels, keep header and IEND
    info = probe_image(bytes(data), LIMITS)
    assert (info.format, info.width, info.height, info.mode) == ("PNG", 40, 30, "RGB")
    assert code_of(bytes(data)) == "image_corrupt"  # decoding does notice


def test_output_limit() -> None:
    check_output_size(16384, 100, LIMITS)
    with pytest.raises(ImageError) as info:
        check_output_size(16385, 100, LIMITS)
    assert info.value.code == "output_too_large"


# ---- output ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "webp", "tga"])
def test_encode_keeps_alpha_and_metadata(fmt: str) -> None:
    rgba = noise(12, 10, 4, seed=5)
    data = encode_image(rgba[:, :, :3], rgba[:, :, 3], fmt, quality=100,
                        metadata={"upscaler": "lanczos3"})
    im = Image.open(io.BytesIO(data))
    assert im.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(im)[:, :, 3], rgba[:, :, 3])
    if fmt == "tga":
        assert b"upscaler=lanczos3" in data
    else:
        assert "upscaler=lanczos3" in im.getexif()[0x010E]


def test_jpeg_output_drops_alpha() -> None:
    rgba = noise(12, 10, 4, seed=6)
    im = Image.open(io.BytesIO(encode_image(rgba[:, :, :3], rgba[:, :, 3], "jpeg")))
    assert im.format == "JPEG" and im.mode == "RGB"


def test_output_format_choice() -> None:
    assert output_format_for("PNG") == "png"
    assert output_format_for("JPEG") == "jpeg"
    assert output_format_for("WEBP") == "webp"
    assert output_format_for("TGA") == "tga"
    assert output_format_for("BMP") == "png" and output_format_for("GIF") == "png"
    assert output_format_for("PNG", "webp") == "webp"
    with pytest.raises(ImageError) as info:
        output_format_for("PNG", "gif")
    assert info.value.code == "image_unsupported"
    assert format_for_suffix(".JPG") == "jpeg" and format_for_suffix(".exr") is None


def test_icc_profile_on_a_palette_image_keeps_transparency() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    img = load(encode(pal, "PNG", transparency=0, icc_profile=swapped_primaries_icc()))
    assert img.icc_converted and img.alpha is not None
    assert img.alpha[0, 0] == 0 and img.alpha[1, 1] == 255
    assert img.rgb[1, 1, 2] > 240 and img.rgb[1, 1, 0] < 20


_SAMPLES = {fmt: encode(Image.fromarray(noise(24, 20, 4 if fmt in ("PNG", "WEBP", "TGA") else 3,
                                              seed=9)), fmt)
            for fmt in ("PNG", "JPEG", "WEBP", "TGA", "BMP", "GIF")}


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(sorted(_SAMPLES)), data=st.data())
def test_damaged_files_load_or_fail_with_an_image_error(fmt: str, data: st.DataObject) -> None:
    """Flipped bytes and cut files never escape as anything but an ImageError."""
    blob = bytearray(_SAMPLES[fmt])
    for _ in range(data.draw(st.integers(0, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        img = load_image(bytes(blob), limits=LIMITS)
    except ImageError as exc:
        assert exc.code.startswith("image_") and "\n" not in exc.message
    else:
        assert img.rgb.ndim == 3 and img.rgb.shape[2] == 3
