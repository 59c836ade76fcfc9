"""Generated game assets with known kinds: normal maps from height fields, ORM packs, height
maps, pixel-art sprites, painted sprites, tileable textures, illustrations and UI icons."""

from __future__ import annotations

import numpy as np

from service.core.normalmap import encode_normals, normals_from_height


def height_field(size: int, seed: int, *, slope: float = 2.2, amplitude: float = 6.0
                 ) -> np.ndarray:
    """A smooth periodic height field (float64, pixel units)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    radius = np.sqrt(fy ** 2 + fx ** 2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius ** slope
    spectrum[0, 0] = 0.0
    spectrum[radius > 0.15] = 0.0  # keep it smooth enough to be resampled faithfully
    plane = np.real(np.fft.ifft2(spectrum))
    return plane / plane.std() * amplitude


def normal_map(size: int, seed: int, green: str = "opengl", dtype: type = np.uint8) -> np.ndarray:
    return encode_normals(normals_from_height(height_field(size, seed), green=green),
                          np.dtype(dtype))


def orm_pack(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ao = 200 + 40 * np.sin(np.linspace(0, 6, size))[None, :] * np.ones((size, 1))
    rough = rng.integers(90, 200, size=(size, size)).astype(np.float64)
    metal = np.where(np.arange(size)[:, None] > size // 2, 255, 0) * np.ones((1, size))
    return np.dstack([ao, rough, metal]).clip(0, 255).astype(np.uint8)


def height16(size: int, seed: int) -> np.ndarray:
    h = height_field(size, seed)
    grey = ((h - h.min()) / (np.ptp(h) or 1) * 65535).round().astype(np.uint16)
    return np.repeat(grey[:, :, None], 3, axis=2)


PALETTE = np.array([[20, 12, 28], [68, 36, 52], [48, 52, 109], [78, 74, 78], [133, 76, 48],
                    [52, 101, 36], [208, 70, 72], [117, 113, 97], [89, 125, 206],
                    [210, 125, 44], [133, 149, 161], [109, 170, 44], [210, 170, 153],
                    [109, 194, 202], [218, 212, 94], [222, 238, 214]], dtype=np.uint8)


def pixel_sprite(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric blob sprite from a 16-colour palette, with a transparent background."""
    rng = np.random.default_rng(seed)
    half = rng.integers(0, len(PALETTE), size=(size, (size + 1) // 2))
    mask_half = rng.random((size, (size + 1) // 2)) < 0.55
    idx = np.concatenate([half, half[:, ::-1][:, size % 2:]], axis=1)
    mask = np.concatenate([mask_half, mask_half[:, ::-1][:, size % 2:]], axis=1)
    yy, xx = np.mgrid[0:size, 0:size]
    mask &= (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.2) ** 2
    rgb = PALETTE[idx]
    rgb[~mask] = 0
    return rgb, np.where(mask, 255, 0).astype(np.uint8)


def painted_sprite(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A shaded disc with soft, anti-aliased edges on transparency (many colours)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size * (0.45 + 0.1 * rng.random()), size * (0.45 + 0.1 * rng.random())
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    alpha = np.clip((size * 0.38 - r) * 2.0, 0, 1)
    base = rng.integers(60, 200, size=3)
    shade = 1.0 - r / size + 0.1 * np.sin(xx / 7.0 + seed)
    rgb = np.clip(base[None, None, :] * shade[:, :, None] + rng.normal(0, 6, (size, size, 3)),
                  0, 255).astype(np.uint8)
    return rgb, (alpha * 255).round().astype(np.uint8)


def tileable_texture(size: int, seed: int) -> np.ndarray:
    h = height_field(size, seed, slope=1.2, amplitude=30.0)
    tint = np.random.default_rng(seed).integers(60, 190, size=3)
    return np.clip(tint[None, None, :] + h[:, :, None] * np.array([1.0, 0.8, 0.6]), 0,
                   255).astype(np.uint8)


def illustration(size: int, seed: int) -> np.ndarray:
    """A non-wrapping scene: sky gradient over ground, with a sun and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    sky = np.dstack([80 + 100 * yy, 120 + 90 * yy, 230 - 60 * yy])
    ground = np.dstack([70 + 60 * xx, 120 + 30 * yy, 40 + 20 * xx])
    img = np.where((yy > 0.6 + 0.05 * np.sin(xx * 9 + seed))[:, :, None], ground, sky)
    sun = (xx - 0.75) ** 2 + (yy - 0.2) ** 2 < 0.01
    img[sun] = (250, 230, 120)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


Asset = tuple[str, str, np.ndarray, np.ndarray | None]  # (label, file name, rgb, alpha)


def labelled_set() -> list[Asset]:
    """The labelled set for the auto-detection test: names that follow a convention and plain
    names whose content has to decide."""
    out: list[Asset] = []

    def add(label: str, name: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        out.append((label, name, rgb, alpha))

    for i in range(4):
        add("normal", f"rock_{i}.png", normal_map(96, i), None)
        add("normal", f"brick_{i}_normal_directx.png", normal_map(64, 10 + i, "directx"), None)
    for i in range(2):
        add("normal", f"panel_{i}.png", normal_map(80, 15 + i, "directx"), None)
    add("normal", "T_Wall_N.png", normal_map(64, 20), None)
    add("normal", "hull_nrm_2k.png", normal_map(64, 21), None)
    for i in range(3):
        add("mask", f"metal_plate_{i}_ORM.png", orm_pack(64, i), None)
        add("mask", f"terrain_{i}.png", height16(96, 30 + i), None)
    add("mask", "crate_rough.png", orm_pack(64, 7)[:, :, [1, 1, 1]], None)
    add("mask", "crate_height_4k.png", height16(64, 8), None)
    add("mask", "barrel-ao.png", orm_pack(64, 9)[:, :, [0, 0, 0]], None)
    for i in range(5):
        rgb, alpha = pixel_sprite(16 + 8 * i, 40 + i)
        add("pixel_art", f"hero_{i}.png", rgb, alpha)
    rgb, alpha = pixel_sprite(16, 49)
    add("pixel_art", "slime_x4.png", np.repeat(np.repeat(rgb, 4, 0), 4, 1),
        np.repeat(np.repeat(alpha, 4, 0), 4, 1))
    for i in range(4):
        rgb, alpha = painted_sprite(160, 50 + i)
        add("sprite", f"knight_{i}.png", rgb, alpha)
    for i in range(3):
        add("texture", f"cobble_{i}.png", tileable_texture(128, 60 + i), None)
    add("texture", "bark_albedo.png", illustration(96, 69), None)
    for i in range(3):
        add("illustration", f"splash_{i}.png", illustration(160, 70 + i), None)
    rgb, alpha = painted_sprite(96, 80)
    add("ui", "coin_icon.png", rgb, alpha)
    add("ui", "start_button.png", *painted_sprite(96, 81))
    return out
