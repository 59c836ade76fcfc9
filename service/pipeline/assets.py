"""Asset types inside the one pipeline: the pre-upscale each type takes, cell by cell on sheets.

:func:`upscale_base` is what :func:`~service.pipeline.prepare.prepare` calls for the pixels at
the target size:

* ``normal`` — :func:`service.core.normalmap.upscale_normals` (vectors resampled, renormalised,
  green kept); alpha (often a height channel) per channel;
* ``mask`` — every channel on its own (:func:`service.core.normalmap.upscale_channels`), no
  matte, no colour fix; 16-bit stays 16-bit;
* ``pixel_art`` — the integer pixel-art scaler (:func:`service.core.pixelart.scale_pixels`) on
  colour and alpha together; only the input's colours come out;
* every other type — the caller's colour path (colour on a bled matte with the chosen base
  upscaler, alpha on its own), the input of the diffusion stages.

With a ``sheet`` each cell goes through that path on its own pixels
(:func:`service.core.cells.upscale_cells`) and gets its own tile grid
(:func:`service.core.cells.plan_sheet`), so no filter, model or tile crosses a cell border.
Which GPU stages follow is :func:`service.pipeline.stages.stage_plan`'s choice (none for the
three deterministic types).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.core.alpha import recombine, split
from service.core.cells import SheetPlan, integer_scale, plan_sheet, upscale_cells
from service.core.imaging import LoadedImage
from service.core.normalmap import upscale_channels, upscale_normals
from service.core.params import UpscaleParams
from service.core.pixelart import integer_factor, lock_palette, palette, scale_pixels
from service.core.sheets import layout_for

#: ``(image, width, height) -> (rgb, alpha | None)`` at exactly ``width`` x ``height``.
BasePath = Callable[[LoadedImage, int, int], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class AssetBase:
    """The pixels at the target size, what made them, and the sheet's tile plan if any."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    upscaler: str
    model: str
    sheet: SheetPlan | None = None
    notes: list[str] = field(default_factory=list)


def upscale_base(image: LoadedImage, params: UpscaleParams, width: int, height: int,
                 colour: BasePath, colour_name: tuple[str, str]) -> AssetBase:
    """``image`` at ``width`` x ``height`` by its asset type's path (see module docstring);
    ``colour`` / ``colour_name`` are the diffusion types' path and ``(upscaler, model)``."""
    notes: list[str] = []
    path, (name, model) = _path(params, image, width, height, colour, colour_name, notes)
    if params.sheet is None:
        rgb, alpha = path(image, width, height)
        return AssetBase(rgb, alpha, name, model, None, notes)
    layout = layout_for(params.sheet, image.width, image.height)
    factor = integer_scale(layout, width, height)

    def cell(crop: np.ndarray, w: int, h: int) -> np.ndarray:
        rgb, alpha = split(crop) if image.alpha is not None else (crop, None)
        out_rgb, out_alpha = path(dataclasses.replace(image, rgb=rgb, alpha=alpha), w, h)
        return recombine(out_rgb, out_alpha)

    whole = upscale_cells(recombine(image.rgb, image.alpha), layout, factor, cell)
    rgb, alpha = split(whole) if image.alpha is not None else (whole, None)
    sheet = plan_sheet(layout.scaled(factor), params.tile_size, params.overlap)
    if params.seam_fix != "none":
        notes.append("seam fix is off for spritesheets (each cell is blended on its own)")
    return AssetBase(rgb, alpha, name, model, sheet, notes)


def _path(params: UpscaleParams, image: LoadedImage, width: int, height: int,
          colour: BasePath, colour_name: tuple[str, str], notes: list[str]
          ) -> tuple[BasePath, tuple[str, str]]:
    tileable = params.tileable and params.sheet is None
    kind = params.asset_type
    if kind == "normal":
        def normal(img: LoadedImage, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
            alpha = None if img.alpha is None else upscale_channels(img.alpha, w, h,
                                                                    tileable=tileable)
            return upscale_normals(img.rgb, w, h, tileable=tileable), alpha

        return normal, ("normal", "normal vectors: lanczos, renormalised, green kept")
    if kind == "mask":
        def channels(img: LoadedImage, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
            alpha = None if img.alpha is None else upscale_channels(img.alpha, w, h,
                                                                    tileable=tileable)
            return upscale_channels(img.rgb, w, h, tileable=tileable), alpha

        return channels, ("mask", "per-channel lanczos, no colour fix")
    if kind == "pixel_art":
        factor = integer_factor((image.width, image.height), (width, height)) or 1
        _, ran = scale_pixels(np.zeros((1, 1), np.uint8), factor, params.pixel_scaler)
        if ran.startswith("nearest (") and params.pixel_scaler == "epx":
            notes.append(f"epx has no x{factor}; nearest was used")

        def pixels(img: LoadedImage, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
            k = w // img.width
            out, _ = scale_pixels(recombine(img.rgb, img.alpha), k, params.pixel_scaler)
            return split(out) if img.alpha is not None else (out, None)

        return pixels, (params.pixel_scaler, f"pixel art: {ran}, palette locked")
    return colour, colour_name


def lock_to_input(image: LoadedImage, rgb: np.ndarray, alpha: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """A diffused pixel-art result snapped back onto the input's colours (alpha included)."""
    colours = palette(recombine(image.rgb, image.alpha))
    locked = lock_palette(recombine(rgb, alpha), colours.astype(rgb.dtype))
    return split(locked) if alpha is not None else (locked, None)
