"""Asset types: what kind of game art a file is, and therefore which path it takes.

Every upscale job has one asset type, resolved when it is submitted (never when it runs):

============  =========================================================  ====================
type          what it is                                                 path
============  =========================================================  ====================
sprite        a character/prop with transparency                        diffusion
texture       an opaque surface colour map (albedo), often tileable      diffusion
ui            icons, buttons, HUD art                                    diffusion (gentler)
illustration  opaque artwork: splash screens, portraits, concept art     diffusion
normal        a tangent-space normal map                                 vectors, never diffused
mask          ORM/ARM packs, roughness, metallic, AO, masks, height      per channel, never diffused
pixel_art     few colours, hard edges, small                             integer pixel-art scaler
============  =========================================================  ====================

Detection (:func:`detect_asset_type`) looks at the file name first (:data:`NAME_RULES`, the one
table of naming conventions; the suffix is the last ``_``/``-``/space separated word of the stem,
after dropping a trailing size or version word such as ``2k``, ``1024`` or ``v2``), then at the
pixels (:func:`content_type`), and always returns the type *and* the reason, which the job
record keeps. A user's explicit choice (per job or per watch-folder preset) always wins.

Pure: names and arrays in, a :class:`Detection` out; numpy only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

AssetType = Literal["sprite", "texture", "ui", "normal", "mask", "pixel_art", "illustration"]
AssetTypeChoice = Literal["auto", "sprite", "texture", "ui", "normal", "mask", "pixel_art",
                          "illustration"]
ASSET_TYPES: tuple[AssetType, ...] = ("sprite", "texture", "ui", "normal", "mask", "pixel_art",
                                      "illustration")
#: Types that never go through diffusion (their pixels are data, or must keep their palette).
DETERMINISTIC: frozenset[str] = frozenset({"normal", "mask", "pixel_art"})

DetectedBy = Literal["user", "name", "content"]


@dataclass(frozen=True)
class NameRule:
    """File-name suffixes (lower case, with the leading ``_``) that name one asset type."""

    asset_type: AssetType
    suffixes: tuple[str, ...]
    meaning: str


#: The naming conventions, in one table (docs/guide/asset-types.md prints it).
NAME_RULES: tuple[NameRule, ...] = (
    NameRule("normal", ("_n", "_nm", "_nrm", "_normal", "_normals", "_normalmap", "_norm",
                        "_normal_opengl", "_normal_directx", "_normal_gl", "_normal_dx",
                        "_normalgl", "_normaldx"),
             "tangent-space normal map (Unreal T_X_N, Substance, TextureCan)"),
    NameRule("mask", ("_orm", "_arm", "_rma", "_mra", "_nrao", "_rough", "_roughness",
                      "_metal", "_metallic", "_metalness", "_ao", "_occlusion", "_mask",
                      "_maskmap", "_height", "_h", "_disp", "_displacement", "_bump",
                      "_spec", "_specular", "_smoothness", "_gloss", "_opacity", "_emissive_mask"),
             "packed or single-channel material data (linear, per channel)"),
    NameRule("pixel_art", ("_pixel", "_pixelart", "_px", "_8bit", "_16bit"),
             "pixel art (integer scale, palette kept)"),
    NameRule("ui", ("_ui", "_icon", "_btn", "_button", "_hud", "_gui", "_cursor"),
             "interface art (gentler diffusion)"),
    NameRule("texture", ("_albedo", "_basecolor", "_base_color", "_diffuse", "_diff", "_d",
                         "_col", "_color", "_colour", "_bc", "_tile", "_tileable", "_seamless"),
             "surface colour map (tileable when it wraps)"),
)

_TRAILING_NOISE = re.compile(r"^(\d+k|\d+|v\d+|x\d+(\.\d+)?|\d+x\d+|final|copy)$")
_SEPARATORS = re.compile(r"[\s\-.]+")


@dataclass(frozen=True)
class Detection:
    """The asset type a job uses, how it was decided and why (one line for the job record)."""

    asset_type: AssetType
    by: DetectedBy
    reason: str
    hints: tuple[tuple[str, str], ...] = ()  # extra findings, e.g. ("green", "opengl")

    def hint(self, key: str) -> str | None:
        return dict(self.hints).get(key)

    def summary(self) -> str:
        """One line for the job record: ``by name: file name ends in _n (green: opengl)``."""
        extra = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in self.hints)
        return f"{self.by}: {self.reason}" + (f" ({extra})" if extra else "")


def name_words(filename: str) -> list[str]:
    """Lower-case words of a file name's stem, without trailing size/version words."""
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    words = [w for w in _SEPARATORS.sub("_", stem.lower()).split("_") if w]
    while len(words) > 1 and _TRAILING_NOISE.match(words[-1]):
        words.pop()
    return words


def type_from_name(filename: str) -> tuple[AssetType, str] | None:
    """``(type, suffix)`` when the name follows a convention of :data:`NAME_RULES`."""
    words = name_words(filename)
    if len(words) < 2:
        return None
    candidates = ["_" + "_".join(words[-2:]), "_" + words[-1]]
    for suffix in candidates:
        for rule in NAME_RULES:
            if suffix in rule.suffixes:
                return rule.asset_type, suffix
    return None


def green_from_name(filename: str) -> str | None:
    """``opengl``/``directx`` when the name says which normal-map convention it uses."""
    words = name_words(filename)
    tail = "_".join(words[-2:])
    if any(t in tail for t in ("directx", "_dx", "normaldx")) or tail.endswith("dx"):
        return "directx"
    if any(t in tail for t in ("opengl", "_gl", "normalgl")) or tail.endswith("gl"):
        return "opengl"
    return None


# ---- content rules ---------------------------------------------------------------------------


def _unit(rgb: np.ndarray) -> np.ndarray:
    top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else 1.0
    return rgb.astype(np.float32) / top


def _sample(arr: np.ndarray, limit: int = 256) -> np.ndarray:
    """A strided view no larger than about ``limit`` px a side (cheap statistics)."""
    step = max(1, max(arr.shape[:2]) // limit)
    return arr[::step, ::step]


def normal_score(rgb: np.ndarray, alpha: np.ndarray | None = None) -> tuple[bool, str]:
    """Whether the pixels look like a tangent-space normal map, and the figures that say so.

    A normal map decodes (``v = 2 c - 1``) to vectors near unit length whose mean points out of
    the surface, near ``(0.5, 0.5, 1)`` encoded. Two-channel maps (blue all 0, BC5 style)
    qualify when ``x² + y² <= 1`` everywhere.
    """
    px = _sample(rgb)
    if alpha is not None:
        visible = _sample(alpha) > 0
        if not visible.any():
            return False, "nothing visible"
        px = px[visible]
    v = _unit(px).reshape(-1, 3) * 2.0 - 1.0
    if float(np.abs(v[:, 2] + 1.0).max()) < 1e-3:  # blue all 0: a two-channel map
        xy = (v[:, 0] ** 2 + v[:, 1] ** 2)
        ok = bool((xy <= 1.02).mean() > 0.99 and np.abs(v[:, :2].mean(axis=0)).max() < 0.2
                  and float(v[:, :2].std()) > 0.003)
        return ok, f"two-channel map, {float((xy <= 1.02).mean()):.0%} inside the unit disc"
    length = np.sqrt((v ** 2).sum(axis=1))
    near = float((np.abs(length - 1.0) < 0.08).mean())
    mean = px.reshape(-1, 3).mean(axis=0) / (np.iinfo(rgb.dtype).max if rgb.dtype.kind in "ui"
                                             else 1.0)
    ok = near > 0.95 and abs(mean[0] - 0.5) < 0.12 and abs(mean[1] - 0.5) < 0.12 \
        and mean[2] > 0.75 and float((v[:, 2] > 0).mean()) > 0.98
    return ok, (f"{near:.0%} of pixels decode to unit vectors, mean colour "
                f"({mean[0]:.2f}, {mean[1]:.2f}, {mean[2]:.2f})")


def pixel_art_score(rgb: np.ndarray, alpha: np.ndarray | None = None,
                    *, max_side: int = 512, max_colours: int = 64) -> tuple[bool, str]:
    """Few colours, hard edges, small: pixel art (and its native pixel size, if pre-scaled)."""
    height, width = rgb.shape[:2]
    if rgb.dtype != np.uint8:
        return False, "16-bit"
    if max(height, width) > max_side * 16:
        return False, f"{width}x{height} is too large for pixel art"
    block = native_pixel_size(rgb, alpha)
    if max(height, width) // block > max_side:
        return False, f"{width}x{height} is too large for pixel art"
    small = rgb[::block, ::block]  # one pixel per drawn pixel
    small_alpha = None if alpha is None else alpha[::block, ::block]
    probe = _pack(_sample(small, 128), None if small_alpha is None else _sample(small_alpha, 128))
    if int(np.unique(probe).size) > max_colours:  # cheap refusal on a sample first
        return False, f"more than {max_colours} colours"
    colours = int(np.unique(_pack(small, small_alpha)).size)
    if colours > max_colours:
        return False, f"{colours} colours"
    # hard edges: neighbouring pixels are either identical or clearly different
    dx = np.abs(np.diff(small.astype(np.int16), axis=1)).max(axis=2)
    dy = np.abs(np.diff(small.astype(np.int16), axis=0)).max(axis=2)
    steps = np.concatenate([dx.ravel(), dy.ravel()])
    changed = steps[steps > 0]
    soft = float((changed < 24).mean()) if changed.size else 0.0
    if soft > 0.35:
        return False, f"{colours} colours but soft edges ({soft:.0%} small steps)"
    scale = f", drawn at {block}x" if block > 1 else ""
    return True, f"{colours} colours, hard edges, {width}x{height}{scale}"


def _pack(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """One uint32 per pixel (RGBA, fully transparent pixels all the same)."""
    a = np.full(rgb.shape[:2], 255, np.uint32) if alpha is None else alpha.astype(np.uint32)
    packed = (rgb[:, :, 0].astype(np.uint32) << 24 | rgb[:, :, 1].astype(np.uint32) << 16
              | rgb[:, :, 2].astype(np.uint32) << 8 | a)
    return np.where(a == 0, 0, packed)


def native_pixel_size(rgb: np.ndarray, alpha: np.ndarray | None = None) -> int:
    """Largest ``k`` (up to 16) such that the image is made of ``k x k`` solid blocks."""
    if rgb.dtype != np.uint8:
        return 1
    height, width = rgb.shape[:2]
    arrays = [rgb] if alpha is None else [rgb, alpha]
    for k in range(16, 1, -1):
        if height % k or width % k:
            continue
        head = k * min(8, height // k)  # a few block rows first: most k fail there, cheaply
        if all(_blocky(a[:head], k) for a in arrays) and all(_blocky(a, k) for a in arrays):
            return k
    return 1


def _blocky(arr: np.ndarray, k: int) -> bool:
    height, width = arr.shape[:2]
    blocks = arr.reshape(height // k, k, width // k, k, *arr.shape[2:])
    return bool((blocks == blocks[:, :1, :, :1]).all())


def wraps(rgb: np.ndarray) -> bool:
    """True when opposite edges continue each other (a seamless, tileable texture)."""
    height, width = rgb.shape[:2]
    if min(height, width) < 8:
        return False

    def grey(arr: np.ndarray) -> np.ndarray:
        unit = _unit(arr)
        return unit.mean(axis=-1) if rgb.ndim == 3 else unit

    cols = np.linspace(0, width - 2, min(64, width - 1)).astype(int)
    rows = np.linspace(0, height - 2, min(64, height - 1)).astype(int)
    inner_x = float(np.abs(grey(rgb[:, cols + 1]) - grey(rgb[:, cols])).mean())
    inner_y = float(np.abs(grey(rgb[rows + 1]) - grey(rgb[rows])).mean())
    edge_x = float(np.abs(grey(rgb[:, 0]) - grey(rgb[:, -1])).mean())
    edge_y = float(np.abs(grey(rgb[0]) - grey(rgb[-1])).mean())
    return edge_x <= 1.5 * inner_x + 1e-4 and edge_y <= 1.5 * inner_y + 1e-4


def _transparent_share(alpha: np.ndarray | None) -> float:
    if alpha is None:
        return 0.0
    top = np.iinfo(alpha.dtype).max
    return float((_sample(alpha) < top).mean())


def _is_grey(rgb: np.ndarray) -> bool:
    px = _sample(rgb)
    return bool((px[:, :, 0] == px[:, :, 1]).all() and (px[:, :, 1] == px[:, :, 2]).all())


def content_type(rgb: np.ndarray, alpha: np.ndarray | None = None) -> tuple[AssetType, str]:
    """The asset type the pixels suggest, with the figures that decided it.

    Order: normal map (unit vectors), 16-bit greyscale (height/mask data), pixel art (few
    colours, hard edges, small), transparency (sprite), opaque and wrapping (texture), else
    illustration.
    """
    if not _is_grey(rgb):
        ok, why = normal_score(rgb, alpha)
        if ok:
            return "normal", why
    if rgb.dtype == np.uint16 and _is_grey(rgb):
        return "mask", "16-bit greyscale (height or mask data)"
    ok, why = pixel_art_score(rgb, alpha)
    if ok:
        return "pixel_art", why
    share = _transparent_share(alpha)
    if share > 0.02:
        return "sprite", f"{share:.0%} of pixels are transparent"
    if wraps(rgb):
        return "texture", "opaque, and opposite edges continue each other (tileable)"
    return "illustration", "opaque artwork that does not wrap"


def detect_asset_type(filename: str | None, rgb: np.ndarray, alpha: np.ndarray | None = None,
                      *, requested: str = "auto") -> Detection:
    """Resolve ``requested`` (``auto`` or a type) for one image; see the module docstring."""
    hints: list[tuple[str, str]] = []
    if requested != "auto":
        if requested not in ASSET_TYPES:
            raise ValueError(f"unknown asset type {requested!r}; choose auto or one of "
                             f"{', '.join(ASSET_TYPES)}")
        detection = Detection(requested, "user", f"asked for {requested}")
    else:
        by_name = type_from_name(filename or "")
        if by_name is not None:
            kind, suffix = by_name
            detection = Detection(kind, "name", f"file name ends in {suffix}")
        else:
            kind, why = content_type(rgb, alpha)
            detection = Detection(kind, "content", why)
    if detection.asset_type == "normal":
        green = green_from_name(filename or "")
        if green is None:
            green, _ = green_convention(rgb, alpha)
        hints.append(("green", green))
    if detection.asset_type == "pixel_art":
        hints.append(("native_pixel_size", str(native_pixel_size(rgb, alpha))))
    if detection.asset_type == "texture" and rgb.ndim == 3 and wraps(rgb):
        hints.append(("tileable", "true"))
    return Detection(detection.asset_type, detection.by, detection.reason, tuple(hints))


def green_convention(rgb: np.ndarray, alpha: np.ndarray | None = None) -> tuple[str, str]:
    """``opengl``, ``directx`` or ``unknown`` for a normal map, from integrability.

    A real surface's gradient field has no curl; reading green with the wrong sign adds one.
    Only a hint: the normal path keeps green exactly as found whatever this says.
    """
    v = _unit(_sample(rgb, 512)) * 2.0 - 1.0
    z = np.maximum(v[:, :, 2], 0.05)
    gx, g_row = -v[:, :, 0] / z, v[:, :, 1] / z  # OpenGL: green points up (against rows)
    curl_gl = _curl(gx, g_row)
    curl_dx = _curl(gx, -g_row)
    if max(curl_gl, curl_dx) < 1e-6:
        return "unknown", "flat map"
    if curl_gl < 0.7 * curl_dx:
        return "opengl", f"curl {curl_gl:.4f} (OpenGL) vs {curl_dx:.4f} (DirectX)"
    if curl_dx < 0.7 * curl_gl:
        return "directx", f"curl {curl_dx:.4f} (DirectX) vs {curl_gl:.4f} (OpenGL)"
    return "unknown", "both readings integrate equally well"


def _curl(gx: np.ndarray, g_row: np.ndarray) -> float:
    if min(gx.shape) < 3:
        return 0.0
    d_gx_row = gx[1:, :-1] - gx[:-1, :-1]
    d_grow_x = g_row[:-1, 1:] - g_row[:-1, :-1]
    return float(np.abs(d_gx_row - d_grow_x).mean())
