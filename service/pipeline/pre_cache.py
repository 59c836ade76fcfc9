"""Pre-upscaled images in the artifact store, so a resumed or re-run job does not run a slow
model upscaler (Real-ESRGAN, Anime4K on the CPU) again.

:class:`CachedUpscaler` wraps any base upscaler behind the same ``Upscaler`` protocol: the key is
sha256(input pixels, upscaler name and model, target size, tileable, pipeline version).
Resamplers (lanczos, nearest) are cheaper to run than to store and are not wrapped.
"""

from __future__ import annotations

import logging

import numpy as np

from service.pipeline.refine import digest
from service.storage.artifacts import ArtifactStore
from service.upscalers.base import Upscaler

log = logging.getLogger(__name__)

UNCACHED = ("lanczos", "nearest")


class CachedUpscaler:
    """An ``Upscaler`` whose results are kept in the artifact store (kind ``pre``)."""

    def __init__(self, inner: Upscaler, artifacts: ArtifactStore) -> None:
        self.inner, self.artifacts = inner, artifacts
        self.name, self.model = inner.name, inner.model
        self.hits = 0

    def available(self) -> bool:
        return self.inner.available()

    def unavailable_reason(self) -> str:
        return self.inner.unavailable_reason()

    def upscale(self, rgb: np.ndarray, width: int, height: int, *,
                tileable: bool = False) -> np.ndarray:
        key = digest("pre", self.name, self.model, width, height, tileable, rgb)
        cached = self.artifacts.get_array(key, kind="pre")
        if cached is not None and cached.shape[:2] == (height, width):
            self.hits += 1
            log.info("pre-upscale %dx%d with %s from the cache", width, height, self.name)
            return cached
        out = self.inner.upscale(rgb, width, height, tileable=tileable)
        self.artifacts.put_array(key, out, kind="pre")
        return out


def cached_upscaler(inner: Upscaler, artifacts: ArtifactStore) -> Upscaler:
    return inner if inner.name in UNCACHED else CachedUpscaler(inner, artifacts)
