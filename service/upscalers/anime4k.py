"""Anime4KCPP ACNet through ``pyanime4k`` (extra ``sr``): a small CNN compiled into the wheel.

Runs on the CPU in milliseconds per megapixel; native factor x2, chained for larger scales.
Good on drawn art, UI and sprites.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.upscalers.base import ModelUpscaler


class Anime4kUpscaler(ModelUpscaler):
    name = "anime4k"
    model = "anime4kcpp-acnet-gan"
    factors = (2,)
    tile = 512
    pad = 8

    def __init__(self, model_name: str = "acnet-gan") -> None:
        super().__init__()
        self._model_name = model_name
        self.model = f"anime4kcpp-{model_name}"
        self._processor: Any = None

    def _probe(self) -> str:
        try:
            from pyanime4k.pyac import pyac  # noqa: PLC0415
        except ImportError as exc:
            return f"pyanime4k is not installed ({exc}); pip install 'ai-assets-toolbox[sr]'"
        try:
            self._processor = pyac.core.Processor("cpu", 0, self._model_name)
        except Exception as exc:  # noqa: BLE001 - native library refusal of any kind
            return f"pyanime4k could not start its CPU processor: {exc}"
        if not self._processor.ok():
            return f"pyanime4k CPU processor failed: {self._processor.error()}"
        return ""

    def _step(self, rgb: np.ndarray, factor: int) -> np.ndarray:
        if not self.available():
            raise RuntimeError(self.unavailable_reason())
        out = self._processor(np.ascontiguousarray(rgb), float(factor))
        return np.asarray(out, dtype=np.uint8)
