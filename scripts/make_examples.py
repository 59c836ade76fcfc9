"""Generate the example images in examples/ (deterministic; run: .venv/bin/python scripts/make_examples.py).

* ``examples/sprite.png``  96x96 RGBA sprite: a shaded gem with a soft outline on full
  transparency (the transparent pixels store black, the classic source of dark halos).
* ``examples/stone-tileable.png``  128x128 RGB seamless texture: sums of sines whose periods
  divide the size, so its left/right and top/bottom edges continue each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "examples"


def sprite(size: int = 96) -> np.ndarray:
    """A gem: radial shading inside a rotated square, anti-aliased edge, alpha outside 0."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx = cy = size / 2
    u, v = (xx - cx) / (size * 0.38), (yy - cy) / (size * 0.38)
    dist = np.abs(u) + np.abs(v)  # diamond
    coverage = np.clip((1.0 - dist) * size * 0.38, 0.0, 1.0)
    light = np.clip(1.1 - 0.9 * np.hypot(u + 0.3, v + 0.35), 0.15, 1.0)
    facet = (np.sign(u) * 0.08 + np.sign(v) * 0.05)
    red = np.clip(0.25 + 0.75 * light + facet, 0, 1)
    green = np.clip(0.10 + 0.45 * light ** 2 + facet, 0, 1)
    blue = np.clip(0.55 + 0.45 * light - facet, 0, 1)
    rgb = np.dstack([red, green, blue]) * (coverage > 0)[:, :, None]
    alpha = coverage
    return np.dstack([rgb, alpha]).__mul__(255).round().astype(np.uint8)


def tileable(size: int = 128) -> np.ndarray:
    """Seamless stone-like texture: periodic sines with periods dividing ``size``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    t = 2 * np.pi / size
    rng = np.random.default_rng(7)
    field = np.zeros((size, size))
    for _ in range(24):
        kx, ky = rng.integers(-6, 7, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(t * (kx * xx + ky * yy) + phase) / (1 + np.hypot(kx, ky))
    field = (field - field.min()) / (field.max() - field.min())
    grout = np.abs(np.sin(t * 4 * xx)) * np.abs(np.sin(t * 4 * yy))
    tone = 0.35 + 0.5 * field * (0.6 + 0.4 * np.sqrt(grout))
    rgb = np.dstack([tone * 1.02, tone * 0.96, tone * 0.88])
    return np.clip(rgb * 255, 0, 255).round().astype(np.uint8)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    Image.fromarray(sprite()).save(OUT / "sprite.png", optimize=True)
    Image.fromarray(tileable()).save(OUT / "stone-tileable.png", optimize=True)
    for path in sorted(OUT.glob("*.png")):
        print(f"{path.relative_to(OUT.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
