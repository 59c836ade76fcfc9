"""Synthetic test images for the tiling, blending, colour and seam-metric tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def fractal(height: int, width: int, seed: int = 0, *, slope: float = 1.4, std: float = 25.0) -> np.ndarray:
    """A periodic (wraps seamlessly) 1/f^slope noise texture around level 128, float64 (H, W)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) / radius**slope
    spectrum[0, 0] = 0.0
    plane = np.real(np.fft.ifft2(spectrum))
    return plane / plane.std() * std + 128.0


def to_rgb8(plane: np.ndarray, tint: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Grey float plane -> (H, W, 3) uint8 with an optional per-channel offset."""
    rgb = plane[..., None] + np.asarray(tint)[None, None, :]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@pytest.fixture
def texture() -> Callable[..., np.ndarray]:
    return fractal


@pytest.fixture
def rgb8() -> Callable[..., np.ndarray]:
    return to_rgb8
