"""Assembly: blend refined tiles back into one image, colour-fix it, put alpha back.

``finish`` blends the refined tiles (the pre-upscaled pixels stand in for any tile not refined),
applies the colour fix against the pre-upscaled reference, composites an optional seam-fix pass
and puts alpha back.

The colour fix runs either once over the blended image, or per tile with :func:`fix_tile` as
each refined tile arrives (the pipeline's stages do this in a worker thread while other tiles
are still on the GPU, then call ``finish(..., colour_fixed=True)``): every tile's low
frequencies are pulled to the reference region under it, so the blend of fixed tiles carries the
reference's colour and the whole-image pass is not needed.

:class:`Assembly` goes one step further: a thread blends the fixed tiles as they arrive and
hands every finished band of rows to a row consumer (a PNG stream), so after the last tile only
its own band is left to blend and compress.

No I/O here: arrays in, arrays out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from service.core.alpha import recombine
from service.core.blending import blend_seam_fix, blend_tiles
from service.core.cells import blend_sheet
from service.core.colour import colour_fix
from service.core.imaging import ImageLimits, LoadedImage
from service.core.params import UpscaleParams
from service.core.tiling import extract_tile
from service.pipeline.assets import lock_to_input
from service.pipeline.prepare import Prepared, prepare, widen
from service.upscalers.base import Upscaler

log = logging.getLogger(__name__)


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


def blend(prepared: Prepared, refined: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Blend refined tiles over the plan; missing tiles use the pre-upscaled pixels.

    With nothing refined this is the base upscale itself (a copy). The seam-fix tiles of
    :meth:`Prepared.seam_fix_plan` are cut from this image before they are refined.
    """
    if not refined:
        return prepared.base.copy()
    base, tiles = prepared.base, prepared.plan.tiles

    def tile(i: int) -> np.ndarray:
        return widen(refined[i], base.dtype) if i in refined else extract_tile(base, tiles[i])

    if prepared.sheet is not None:  # each cell blended on its own, gutters kept
        return blend_sheet(prepared.sheet, tile, base)
    return blend_tiles(prepared.plan, tile, channels=3, dtype=base.dtype)


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
    return colour_fix(widen(tile, reference.dtype), reference, params.colour_fix)


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
            lambda i: widen(seams[i], out.dtype) if i in seams
            else extract_tile(source, fix_plan.tiles[i]),
            inplace=True)
    if (refined or seam_refined) and not colour_fixed:
        out = colour_fix(out, prepared.base, params.colour_fix)
    alpha = prepared.alpha
    if (refined or seam_refined) and params.asset_type == "pixel_art":
        out, alpha = lock_to_input(prepared.image, out, alpha)  # diffused on request
    return Rendered(out, alpha, prepared.upscaler, prepared.model, list(prepared.warnings))


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
        return prepared.seam_fix_plan() is None and not prepared.params.tileable \
            and prepared.sheet is None and prepared.params.asset_type != "pixel_art"

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
        return widen(tile, self.prepared.base.dtype)

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
