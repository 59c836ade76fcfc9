"""Prepare: pre-upscale an image to its target size and plan its tiles.

``prepare`` pre-upscales a :class:`~service.core.imaging.LoadedImage` to the target size (colour
on a bled matte with the chosen base upscaler, alpha separately as a grey image with the same
upscaler) and plans the tiles. A GPU backend may then refine tiles (``Prepared.tile(i)`` gives
the input of tile ``i``); :mod:`service.pipeline.assembly` blends them back. No I/O here: arrays
in, arrays out.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

from service.core.alpha import bleed_colour, is_opaque
from service.core.assets import DETERMINISTIC
from service.core.cells import SheetPlan
from service.core.imaging import ImageLimits, LoadedImage, check_output_size
from service.core.params import UpscaleParams
from service.core.tiling import TilePlan, extract_tile, plan_seam_fix, plan_tiles
from service.pipeline.assets import upscale_base
from service.upscalers.base import Upscaler
from service.upscalers.lanczos import LanczosUpscaler, resize_lanczos

log = logging.getLogger(__name__)

_RESAMPLERS = ("lanczos", "nearest")


@dataclass
class Prepared:
    """An image pre-upscaled to its target size, with its tile plan."""

    image: LoadedImage
    params: UpscaleParams
    base: np.ndarray  # (H, W, 3) colour at the target size: tile source and colour reference
    alpha: np.ndarray | None  # (H, W) alpha at the target size, or None
    plan: TilePlan
    upscaler: str  # registry name of the base upscaler that ran
    model: str  # what exactly ran (recorded in the output's metadata)
    warnings: list[str] = field(default_factory=list)
    sheet: SheetPlan | None = None  # tiles planned per spritesheet cell (service.core.cells)

    @property
    def width(self) -> int:
        return self.plan.width

    @property
    def height(self) -> int:
        return self.plan.height

    def tile(self, index: int) -> np.ndarray:
        """Input of tile ``index`` for a GPU refine: ``(h, w, 3)`` ``uint8`` (16-bit bases are
        reduced; refined tiles come back as ``uint8`` and :func:`~service.pipeline.assembly.finish` widens them)."""
        return to_uint8(extract_tile(self.base, self.plan.tiles[index]))

    def seam_tile(self, blended: np.ndarray, index: int) -> np.ndarray:
        """Input of seam-fix tile ``index``, cut from :func:`~service.pipeline.assembly.blend`'s result, as ``uint8``."""
        plan = self.seam_fix_plan()
        if plan is None:
            raise ValueError("seam fix is off for this image; there are no seam tiles")
        return to_uint8(extract_tile(blended, plan.tiles[index]))

    def seed_slot(self, index: int) -> int:
        """The seed slot of tile ``index``: itself, or on a sheet its index inside its cell, so
        every frame is refined with the same seeds."""
        return self.sheet.seed_slot(index) if self.sheet is not None else index

    def seam_fix_plan(self) -> TilePlan | None:
        """The seam-fix tiles to refine after blending, or None when seam fix is off."""
        return self._seam_plan

    @functools.cached_property
    def _seam_plan(self) -> TilePlan | None:
        if self.params.seam_fix == "none" or self.sheet is not None:
            return None
        return plan_seam_fix(self.plan, self.params.seam_fix)


def prepare(image: LoadedImage, params: UpscaleParams, upscaler: Upscaler, *,
            limits: ImageLimits | None = None) -> Prepared:
    """Pre-upscale colour (on a matte) and alpha to the target size and plan the tiles."""
    width, height = params.target_size(image.width, image.height)
    check_output_size(width, height, limits or ImageLimits())
    notes = list(image.warnings)
    if image.rgb.dtype != np.uint8 and upscaler.name not in _RESAMPLERS \
            and params.asset_type not in DETERMINISTIC:  # those paths never use the model
        notes.append(f"{upscaler.name} works on 8-bit colour; lanczos was used to keep the "
                     "16-bit precision")
        upscaler = LanczosUpscaler()
    tileable = params.tileable and params.sheet is None

    def colour_path(img: LoadedImage, w: int, h: int) -> tuple[np.ndarray, np.ndarray | None]:
        opaque = is_opaque(img.alpha)
        colour = img.rgb if opaque else bleed_colour(img.rgb, img.alpha)  # type: ignore[arg-type]
        base = upscaler.upscale(colour, w, h, tileable=tileable)
        return base, _upscale_alpha(img, w, h, upscaler, tileable, opaque)

    done = upscale_base(image, params, width, height, colour_path,
                        (upscaler.name, upscaler.model))
    notes += done.notes
    plan = done.sheet.plan if done.sheet is not None else plan_tiles(
        width, height, params.tile_size, params.overlap, tileable=tileable)
    log.debug("prepared %dx%d -> %dx%d with %s, %d tiles", image.width, image.height, width,
              height, done.model, len(plan.tiles))
    return Prepared(image, params, done.rgb, done.alpha, plan, done.upscaler, done.model, notes,
                    sheet=done.sheet)


def _upscale_alpha(image: LoadedImage, width: int, height: int, upscaler: Upscaler,
                   tileable: bool, opaque: bool) -> np.ndarray | None:
    """Alpha at the target size: the colour's model on alpha as grey (sharp edges, as
    Real-ESRGAN's own alpha upsampler does), Lanczos for 16-bit, nearest for ``nearest``."""
    if image.alpha is None:
        return None
    if opaque:
        return np.full((height, width), np.iinfo(image.alpha.dtype).max, image.alpha.dtype)
    if upscaler.name == "nearest":
        from PIL import Image  # noqa: PLC0415 - only this branch needs the enum

        return resize_lanczos(image.alpha, width, height, resample=Image.Resampling.NEAREST)
    smooth = resize_lanczos(image.alpha, width, height, wrap=tileable)
    if upscaler.name == "lanczos" or image.alpha.dtype != np.uint8:
        return smooth
    grey = upscaler.upscale(np.repeat(image.alpha[:, :, None], 3, axis=2), width, height,
                            tileable=tileable)
    sharp = grey.mean(axis=2).round().astype(np.uint8)
    # models drift by a level or two on flat areas: keep solid interiors exactly solid
    sharp[(smooth == 255) & (sharp >= 248)] = 255
    sharp[(smooth == 0) & (sharp <= 7)] = 0
    return sharp


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """``uint8`` view of 8- or 16-bit pixels (16-bit rounded to the nearest 8-bit level)."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def widen(tile: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A refined ``uint8`` tile widened to a 16-bit base (x257 maps 255 to 65535)."""
    if tile.dtype == dtype or dtype != np.uint16:
        return tile
    return tile.astype(np.uint16) * 257
