"""Alpha: bled matte colour, separate alpha, no dark or light halos after upscaling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service.core.alpha import bleed_colour, is_opaque, recombine, split
from service.core.imaging import ImageLimits, encode_image, load_image
from service.core.params import UpscaleParams
from service.pipeline.assembly import render
from service.upscalers.registry import get_upscaler


def disc_sprite(size: int, colour: tuple[int, int, int], under: tuple[int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged disc of ``colour``; transparent pixels store ``under``."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = np.hypot(xx - size / 2, yy - size / 2)
    alpha = np.clip((size * 0.35 - r) * 1.5, 0, 1)
    rgb = np.where((alpha > 0)[:, :, None], np.array(colour), np.array(under))
    return rgb.astype(np.uint8), (alpha * 255).round().astype(np.uint8)


def test_bleed_keeps_visible_pixels_and_fills_holes_with_neighbours() -> None:
    rgb, alpha = disc_sprite(32, (220, 30, 40), (0, 0, 0))
    out = bleed_colour(rgb, alpha)
    visible = alpha > 0
    np.testing.assert_array_equal(out[visible], rgb[visible])
    # every transparent pixel now holds the sprite's colour, not black
    assert out[~visible][:, 0].min() >= 200 and out[~visible][:, 1].max() <= 50


def test_bleed_edge_cases() -> None:
    rgb = np.full((4, 5, 3), 9, np.uint8)
    np.testing.assert_array_equal(bleed_colour(rgb, np.zeros((4, 5), np.uint8)), rgb)
    np.testing.assert_array_equal(bleed_colour(rgb, np.full((4, 5), 255, np.uint8)), rgb)
    assert is_opaque(None) and is_opaque(np.full((2, 2), 255, np.uint8))
    assert not is_opaque(np.array([[255, 254]], np.uint8))


@settings(max_examples=40, deadline=None)
@given(
    rgb=arrays(np.uint8, st.tuples(st.integers(1, 17), st.integers(1, 17), st.just(3))),
    seed=st.integers(0, 2**31),
)
def test_bleed_is_a_convex_fill(rgb: np.ndarray, seed: int) -> None:
    alpha = (np.random.default_rng(seed).random(rgb.shape[:2]) < 0.3).astype(np.uint8) * 200
    out = bleed_colour(rgb, alpha)
    visible = alpha > 0
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out[visible], rgb[visible])
    if visible.any():
        lo, hi = rgb[visible].min(axis=0), rgb[visible].max(axis=0)
        assert (out >= lo).all() and (out <= hi).all()


def test_split_recombine_round_trip() -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    rgb, alpha = split(rgba)
    np.testing.assert_array_equal(recombine(rgb, alpha), rgba)
    assert split(rgba[:, :, :3])[1] is None
    with pytest.raises(ValueError):
        recombine(rgb, alpha[:3])


def _edge_colours(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    edge = (alpha >= 16) & (alpha < 250)
    assert edge.sum() > 20
    return rgb[edge].astype(int)


@pytest.mark.parametrize("name", ["lanczos", "anime4k", "realesrgan"])
def test_no_dark_halo_on_black_under_transparency(name: str) -> None:
    rgb, alpha = disc_sprite(40, (230, 40, 30), (0, 0, 0))
    image = load_image(encode_image(rgb, alpha, "png"), limits=ImageLimits())
    out = render(image, UpscaleParams(scale=3, upscaler=name), get_upscaler(name))
    assert out.alpha is not None and out.rgb.shape == (120, 120, 3)
    edge = _edge_colours(out.rgb, out.alpha)
    assert edge[:, 0].min() >= 200, "edge pixels darkened towards the black matte"
    # the same upscaler without the matte shows the halo this guards against
    naive = get_upscaler(name).upscale(rgb, 120, 120)
    assert _edge_colours(naive, out.alpha)[:, 0].min() < 150


def test_no_light_halo_on_white_under_transparency() -> None:
    rgb, alpha = disc_sprite(40, (20, 30, 90), (255, 255, 255))
    image = load_image(encode_image(rgb, alpha, "png"), limits=ImageLimits())
    out = render(image, UpscaleParams(scale=2.5), get_upscaler("lanczos"))
    edge = _edge_colours(out.rgb, out.alpha)
    assert edge.max(axis=0).tolist() <= [50, 60, 120]


def _alpha_iou(out_alpha: np.ndarray, scale: int) -> float:
    """IoU of the opaque half of ``out_alpha`` with the exact disc drawn at the output size."""
    size = out_alpha.shape[0] // scale
    yy, xx = np.mgrid[0:size * scale, 0:size * scale] + 0.5
    r = np.hypot(xx / scale - size / 2, yy / scale - size / 2)
    truth = np.clip((size * 0.35 - r) * 1.5, 0, 1) >= 0.5
    got = out_alpha >= 128
    return float((truth & got).sum() / max(1, (truth | got).sum()))


def _palette_sprite() -> tuple[bytes, np.ndarray]:
    _, alpha = disc_sprite(32, (0, 0, 0), (0, 0, 0))
    inside = alpha > 127
    pal = Image.new("P", (32, 32))
    pal.putpalette([0, 0, 0, 250, 200, 20, 200, 120, 10] + [0] * 759)
    shade = np.where(np.arange(32)[None, :] < 16, 1, 2)
    pal.putdata(np.where(inside, shade, 0).astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    return buf.getvalue(), np.where(inside, 255, 0).astype(np.uint8)


def _la_sprite() -> tuple[bytes, np.ndarray]:
    rgb, alpha = disc_sprite(32, (180, 180, 180), (0, 0, 0))
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb[:, :, 0], alpha])).save(buf, "PNG")
    return buf.getvalue(), alpha


def _rgba_sprite() -> tuple[bytes, np.ndarray]:
    rgb, alpha = disc_sprite(32, (30, 160, 90), (0, 0, 0))
    return encode_image(rgb, alpha, "png"), alpha


@pytest.mark.parametrize("make", [_palette_sprite, _la_sprite, _rgba_sprite],
                         ids=["palette", "LA", "RGBA"])
def test_alpha_survives_every_alpha_mode(make) -> None:  # type: ignore[no-untyped-def]
    data, _ = make()
    image = load_image(data, limits=ImageLimits())
    assert image.alpha is not None
    out = render(image, UpscaleParams(scale=2), get_upscaler("realesrgan"))
    decoded = Image.open(io.BytesIO(encode_image(out.rgb, out.alpha, "png")))
    assert decoded.mode == "RGBA" and decoded.size == (64, 64)
    out_alpha = np.asarray(decoded)[:, :, 3]
    assert out_alpha[0, 0] == 0 and out_alpha[32, 32] == 255
    assert _alpha_iou(out_alpha, 2) >= 0.98
