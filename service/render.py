"""The local, synchronous image pipeline around the GPU refine step.

``prepare`` pre-upscales a :class:`~service.core.imaging.LoadedImage` to the target size (colour
on a bled matte with the chosen base upscaler, alpha separately as a grey image with the same
upscaler) and plans the tiles. A GPU backend may then refine tiles
(``Prepared.tile(i)`` gives the input of tile ``i``). ``finish`` blends the refined tiles (the
pre-upscaled pixels stand in for any tile not refined), applies the colour fix against the
pre-upscaled reference, composites an optional seam-fix pass and puts alpha back.

The colour fix runs either once over the blended image, or per tile with :func:`fix_tile` as
each refined tile arrives (the job orchestrator does this in a worker thread while other tiles
are still on the GPU, then calls ``finish(..., colour_fixed=True)``): every tile's low
frequencies are pulled to the reference region under it, so the blend of fixed tiles carries the
reference's colour and the whole-image pass is not needed.

:class:`Assembly` goes one step further for the job orchestrator: a thread blends the fixed
tiles as they arrive and hands every finished band of rows to a row consumer (a PNG stream), so
after the last tile only its own band is left to blend and compress.

Used by `aat upscale` (backend ``none``: no tile is refined, so the result is the base upscale)
and by the job orchestrator. No I/O here: arrays in, arrays out.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from service.core.alpha import bleed_colour, is_opaque, recombine
from service.core.blending import blend_seam_fix, blend_tiles
from service.core.colour import colour_fix
from service.core.imaging import ImageLimits, LoadedImage, check_output_size
from service.core.params import UpscaleParams
from service.core.tiling import TilePlan, extract_tile, plan_seam_fix, plan_tiles
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

    @property
    def width(self) -> int:
        return self.plan.width

    @property
    def height(self) -> int:
        return self.plan.height

    def tile(self, index: int) -> np.ndarray:
        """Input of tile ``index`` for a GPU refine: ``(h, w, 3)`` ``uint8`` (16-bit bases are
        reduced; refined tiles come back as ``uint8`` and :func:`finish` widens them)."""
        return to_uint8(extract_tile(self.base, self.plan.tiles[index]))

    def seam_tile(self, blended: np.ndarray, index: int) -> np.ndarray:
        """Input of seam-fix tile ``index``, cut from :func:`blend`'s result, as ``uint8``."""
        plan = self.seam_fix_plan()
        if plan is None:
            raise ValueError("seam fix is off for this image; there are no seam tiles")
        return to_uint8(extract_tile(blended, plan.tiles[index]))

    def seam_fix_plan(self) -> TilePlan | None:
        """The seam-fix tiles to refine after blending, or None when seam fix is off."""
        return self._seam_plan

    @functools.cached_property
    def _seam_plan(self) -> TilePlan | None:
        if self.params.seam_fix == "none":
            return None
        return plan_seam_fix(self.plan, self.params.seam_fix)


@dataclass
class Rendered:
    """The finished image: colour and alpha at the target size."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    upscaler: str
    model: str
    warnings: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> np.ndarray:
        """``(H, W, 3)`` or ``(H, W, 4)`` with alpha last."""
        return recombine(self.rgb, self.alpha)


def prepare(image: LoadedImage, params: UpscaleParams, upscaler: Upscaler, *,
            limits: ImageLimits | None = None) -> Prepared:
    """Pre-upscale colour (on a matte) and alpha to the target size and plan the tiles."""
    width, height = params.target_size(image.width, image.height)
    check_output_size(width, height, limits or ImageLimits())
    notes = list(image.warnings)
    if image.rgb.dtype != np.uint8 and upscaler.name not in _RESAMPLERS:
        notes.append(f"{upscaler.name} works on 8-bit colour; lanczos was used to keep the "
                     "16-bit precision")
        upscaler = LanczosUpscaler()
    opaque = is_opaque(image.alpha)
    colour = image.rgb if opaque else bleed_colour(image.rgb, image.alpha)  # type: ignore[arg-type]
    base = upscaler.upscale(colour, width, height, tileable=params.tileable)
    alpha = _upscale_alpha(image, width, height, upscaler, params.tileable, opaque)
    plan = plan_tiles(width, height, params.tile_size, params.overlap, tileable=params.tileable)
    log.debug("prepared %dx%d -> %dx%d with %s, %d tiles", image.width, image.height, width,
              height, upscaler.model, len(plan.tiles))
    return Prepared(image, params, base, alpha, plan, upscaler.name, upscaler.model, notes)


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


def blend(prepared: Prepared, refined: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Blend refined tiles over the plan; missing tiles use the pre-upscaled pixels.

    With nothing refined this is the base upscale itself (a copy). The seam-fix tiles of
    :meth:`Prepared.seam_fix_plan` are cut from this image before they are refined.
    """
    if not refined:
        return prepared.base.copy()
    base, tiles = prepared.base, prepared.plan.tiles
    return blend_tiles(
        prepared.plan,
        lambda i: _like(refined[i], base.dtype) if i in refined else extract_tile(base, tiles[i]),
        channels=3, dtype=base.dtype)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """``uint8`` view of 8- or 16-bit pixels (16-bit rounded to the nearest 8-bit level)."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _like(tile: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A refined ``uint8`` tile widened to a 16-bit base (x257 maps 255 to 65535)."""
    if tile.dtype == dtype or dtype != np.uint16:
        return tile
    return tile.astype(np.uint16) * 257


def fix_tile(prepared: Prepared, index: int, tile: np.ndarray, *,
             params: UpscaleParams | None = None, seam: bool = False) -> np.ndarray:
    """Colour-fix refined tile ``index`` (of the seam-fix plan when ``seam``) against the
    pre-upscaled pixels under it; returned in the base's dtype, ready for :func:`finish` with
    ``colour_fixed=True``."""
    params = params or prepared.params
    plan = prepared.seam_fix_plan() if seam else prepared.plan
    if plan is None:
        raise ValueError("seam fix is off for this image; there are no seam tiles")
    reference = extract_tile(prepared.base, plan.tiles[index])
    return colour_fix(_like(tile, reference.dtype), reference, params.colour_fix)


def finish(prepared: Prepared, refined: Mapping[int, np.ndarray] | None = None,
           params: UpscaleParams | None = None, *,
           seam_refined: Mapping[int, np.ndarray] | None = None,
           blended: np.ndarray | None = None, colour_fixed: bool = False) -> Rendered:
    """Blend refined tiles, composite the seam-fix pass, colour-fix and recombine alpha.

    ``refined`` maps tile index to refined pixels; missing tiles use the pre-upscaled ones, so
    with nothing refined the colour is exactly the base upscale. ``seam_refined`` holds refined
    tiles of :meth:`Prepared.seam_fix_plan` (identity where missing); pass ``blended`` (from
    :func:`blend`) when it was already computed to cut those tiles. ``colour_fixed`` says the
    ``refined`` tiles went through :func:`fix_tile` already: seam tiles are then fixed per tile
    too and the whole-image colour fix is skipped.
    """
    params = params or prepared.params
    out = blend(prepared, refined) if blended is None else blended.copy()
    fix_plan = prepared.seam_fix_plan()
    if fix_plan is not None and fix_plan.tiles:
        seams = dict(seam_refined or {})
        if colour_fixed:
            seams = {i: fix_tile(prepared, i, t, params=params, seam=True)
                     for i, t in seams.items()}
        source = out.copy() if seams else out
        out = blend_seam_fix(
            out, fix_plan,
            lambda i: _like(seams[i], out.dtype) if i in seams
            else extract_tile(source, fix_plan.tiles[i]),
            inplace=True)
    if (refined or seam_refined) and not colour_fixed:
        out = colour_fix(out, prepared.base, params.colour_fix)
    return Rendered(out, prepared.alpha, prepared.upscaler, prepared.model,
                    list(prepared.warnings))


def render(image: LoadedImage, params: UpscaleParams, upscaler: Upscaler, *,
           limits: ImageLimits | None = None) -> Rendered:
    """Backend ``none``: the base upscale, tiled and finished, with no GPU refine."""
    return finish(prepare(image, params, upscaler, limits=limits), None, params)


RowSink = Callable[[np.ndarray], None]  # takes the next (n, W, C) rows, top to bottom


class AssemblyAborted(RuntimeError):
    """The job stopped before every tile was in; the assembly was abandoned."""


class Assembly:
    """Blend a grid plan's tiles in a thread as they arrive, feeding final rows to ``sink``.

    ``put(index, tile)`` hands over a refined tile; the thread colour-fixes it (:func:`fix_tile`,
    unless ``fix`` is False) just before blending it, so that work stays off the threads that
    talk to the GPU; :meth:`fill_missing` puts the pre-upscaled pixels for tiles never refined;
    :meth:`wait` returns the :class:`Rendered` image. ``sink`` gets colour and alpha together
    (``(n, W, 3 or 4)``), band by band in order. For plans without a seam-fix pass and not
    tileable (those need the whole blended image first: use :func:`finish`).
    """

    def __init__(self, prepared: Prepared, sink: RowSink | None = None, *,
                 fix: bool = True) -> None:
        if not self.supports(prepared):
            raise ValueError("assembly needs a grid plan without seam fix that is not tileable")
        self.prepared, self.sink = prepared, sink
        self.fix = fix and prepared.params.colour_fix != "none"
        self._tiles: dict[int, tuple[np.ndarray, bool]] = {}  # index -> (pixels, to fix)
        self._cond = threading.Condition()
        self._aborted = False
        self._result: Rendered | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aat-assembly", daemon=True)
        self._thread.start()

    @staticmethod
    def supports(prepared: Prepared) -> bool:
        return prepared.seam_fix_plan() is None and not prepared.params.tileable

    def put(self, index: int, tile: np.ndarray, *, refined: bool = True) -> None:
        with self._cond:
            self._tiles[index] = (tile, refined and self.fix)
            self._cond.notify_all()

    def fill_missing(self, refined: Mapping[int, np.ndarray]) -> None:
        """Every tile not in ``refined`` is the pre-upscaled pixels (as :func:`blend` does)."""
        for t in self.prepared.plan.tiles:
            if t.index not in refined:
                self.put(t.index, extract_tile(self.prepared.base, t), refined=False)

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        self._thread.join()

    def wait(self) -> Rendered:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _get(self, index: int) -> np.ndarray:
        with self._cond:
            while index not in self._tiles and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise AssemblyAborted("the job stopped before every tile was refined")
            tile, to_fix = self._tiles.pop(index)
        if to_fix:
            return fix_tile(self.prepared, index, tile)
        return _like(tile, self.prepared.base.dtype)

    def _rows(self, out: np.ndarray, start: int, end: int) -> None:
        if self.sink is not None:
            alpha = self.prepared.alpha
            self.sink(recombine(out[start:end], None if alpha is None else alpha[start:end]))

    def _run(self) -> None:
        p = self.prepared
        try:
            rgb = blend_tiles(p.plan, self._get, channels=3, dtype=p.base.dtype,
                              on_rows=self._rows)
            self._result = Rendered(rgb, p.alpha, p.upscaler, p.model, list(p.warnings))
        except BaseException as exc:  # handed to wait()  # noqa: BLE001
            self._error = exc
