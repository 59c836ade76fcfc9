"""The ``Upscaler`` port and the machinery shared by model-based upscalers.

An upscaler turns ``(H, W, 3)`` colour (``uint8``; Lanczos also takes ``uint16`` and single
channels) into exactly ``width`` x ``height``. Model upscalers have fixed native factors
(x2, x4, ...): :class:`ModelUpscaler` chains them until the target is reached or passed, then
resamples to the exact size with Lanczos. Each model step runs over padded tiles of the input
(:func:`run_tiled`) so peak memory is one tile plus the output, whatever the image size. With
``tileable=True`` the padding wraps around, so a seamless texture stays seamless.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from service.upscalers.lanczos import resize_lanczos

log = logging.getLogger(__name__)

#: Optional ``callback(done, total)`` called by :func:`run_tiled` before each tile and at the end
#: (set it around a call, e.g. to drive a progress bar; context-local, so threads do not mix).
tile_progress: contextvars.ContextVar[Callable[[int, int], None] | None] = \
    contextvars.ContextVar("tile_progress", default=None)


@runtime_checkable
class Upscaler(Protocol):
    """What the render pipeline asks of a base upscaler."""

    name: str  # registry name, e.g. "lanczos", "anime4k", "realesrgan"
    model: str  # what exactly runs, recorded in the output's metadata

    def available(self) -> bool:
        """True when this upscaler can run here (package and system libraries present)."""
        ...

    def unavailable_reason(self) -> str:
        """One line saying why :meth:`available` is False ("" when available)."""
        ...

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        """Resample ``rgb`` to exactly ``(height, width, C)``."""
        ...


def plan_steps(src: tuple[int, int], dst: tuple[int, int], factors: tuple[int, ...]) -> list[int]:
    """Native model factors to apply, in order, before the final exact Lanczos resample.

    Uses the largest factor that does not overshoot the remaining scale; when every factor
    overshoots but the target is still larger, the smallest one finishes the chain (the final
    Lanczos step then scales down a little, which keeps the model's sharpness).
    """
    remaining = max(dst[0] / src[0], dst[1] / src[1])
    steps: list[int] = []
    while remaining > 1.0 + 1e-6:
        fitting = [f for f in factors if f <= remaining + 1e-6]
        factor = max(fitting) if fitting else min(factors)
        steps.append(factor)
        remaining /= factor
    return steps


def run_tiled(
    step: Callable[[np.ndarray], np.ndarray],
    rgb: np.ndarray,
    factor: int,
    *,
    tile: int = 256,
    pad: int = 16,
    wrap: bool = False,
) -> np.ndarray:
    """Apply ``step`` (an exact x``factor`` model) over padded tiles of ``rgb``.

    Each tile sees ``pad`` pixels of context on every side (mirrored at the image border, or
    wrapped when ``wrap``), and only its centre is kept, so tiles join without seams.
    """
    height, width = rgb.shape[:2]
    src = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="wrap" if wrap else "symmetric")
    out = np.empty((height * factor, width * factor, rgb.shape[2]), dtype=rgb.dtype)
    origins = [(y, x) for y in range(0, height, tile) for x in range(0, width, tile)]
    report = tile_progress.get()
    for done, (y, x) in enumerate(origins):
        if report is not None:
            report(done, len(origins))
        h, w = min(tile, height - y), min(tile, width - x)
        result = step(np.ascontiguousarray(src[y:y + h + 2 * pad, x:x + w + 2 * pad]))
        edge = pad * factor
        out[y * factor:(y + h) * factor, x * factor:(x + w) * factor] = \
            result[edge:edge + h * factor, edge:edge + w * factor]
    if report is not None:
        report(len(origins), len(origins))
    return out


class ModelUpscaler:
    """Base for super-resolution models with fixed native factors (subclasses load the model)."""

    name = "model"
    model = "model"
    factors: tuple[int, ...] = (2,)
    tile = 256
    pad = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()  # native models are not re-entrant
        self._reason: str | None = None

    def _probe(self) -> str:
        """Return "" when the model can run, else why not (subclasses override)."""
        return ""

    def available(self) -> bool:
        return self.unavailable_reason() == ""

    def unavailable_reason(self) -> str:
        if self._reason is None:
            self._reason = self._probe()
        return self._reason

    def _step(self, rgb: np.ndarray, factor: int) -> np.ndarray:
        raise NotImplementedError

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{self.name} takes (H, W, 3) uint8 colour, got {rgb.dtype} "
                             f"{rgb.shape}")
        current = rgb
        for factor in plan_steps((rgb.shape[1], rgb.shape[0]), (width, height), self.factors):
            log.debug("%s: x%d on %dx%d", self.model, factor, current.shape[1], current.shape[0])
            with self._lock:
                current = run_tiled(functools.partial(self._step, factor=factor), current,
                                    factor, tile=self.tile, pad=self.pad, wrap=tileable)
        if current.shape[:2] == (height, width):
            return current
        return resize_lanczos(current, width, height, wrap=tileable)
