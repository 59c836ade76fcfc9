"""The container's one loaded model: built on first use, shared by every job, thread-safe.

Every worker handler keeps its pipeline in one :class:`Resident`. ``AAT_WORKER_TINY=1`` asks
for tiny random components instead of weights (the SDK's ``--test_input`` smoke test, the
emulator, CPU tests); ``AAT_DEVICE`` (default ``cuda``) is where real weights go.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def tiny_requested() -> bool:
    return os.environ.get("AAT_WORKER_TINY") == "1"


def device() -> str:
    return os.environ.get("AAT_DEVICE", "cuda")


class Resident(Generic[T]):
    """``tiny()`` when :func:`tiny_requested` (``warning`` is logged: the outputs are noise),
    else ``real()``; loaded once, on the first :meth:`get`."""

    def __init__(self, real: Callable[[], T], tiny: Callable[[], T], warning: str) -> None:
        self._real, self._tiny, self._warning = real, tiny, warning
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                if tiny_requested():
                    log.warning("AAT_WORKER_TINY=1: %s", self._warning)
                    self._value = self._tiny()
                else:
                    self._value = self._real()
            return self._value

    def reset(self) -> None:
        """Forget the loaded model (tests switch settings between modules)."""
        with self._lock:
            self._value = None


def serve(handler: Callable[[dict[str, Any]], Any], pipeline: Resident[Any]) -> None:
    """A worker image's entry point: logging as the service configures it, progress updates
    through the runpod SDK, the model loaded before the first job (a broken image fails at
    start, not per job), then RunPod's serverless loop."""
    import runpod

    from service.core.logs import configure_logging
    from workers.common import progress

    configure_logging("INFO", os.environ.get("AAT_LOG_FORMAT", "text"))
    progress.use_runpod()
    pipeline.get()
    runpod.serverless.start({"handler": handler})
