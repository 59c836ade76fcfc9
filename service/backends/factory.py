"""The one place a GPU backend is built from the settings (CLI, job runner, API, doctor).

``make_backend(settings)`` returns the backend ``settings.effective_backend`` names, or None
for ``none`` (base upscale only); ``make_backend(settings, "runpod")`` builds a named one (what
`aat upscale --backend` asks for). Backends are imported lazily: ``local`` pulls in torch only
when it is chosen, and `aat --help` loads neither.
"""

from __future__ import annotations

from service.backends.base import GpuBackend
from service.core.errors import ParamsError
from service.settings import Settings

GPU_BACKENDS = ("runpod", "local")
BACKENDS = ("none", *GPU_BACKENDS)


def make_backend(settings: Settings, name: str | None = None) -> GpuBackend | None:
    """The backend called ``name`` (default: the configured one), or None for ``none``.

    Raises :class:`ParamsError` for an unknown name and :class:`ConfigError` (from the
    backend) when its settings are incomplete, e.g. RunPod without an API key.
    """
    kind = settings.effective_backend if name is None else name
    if kind == "none":
        return None
    if kind == "runpod":
        from service.backends.runpod import RunPodBackend  # noqa: PLC0415

        return RunPodBackend(settings)
    if kind == "local":
        from service.backends.local import LocalBackend  # noqa: PLC0415

        return LocalBackend(settings)
    raise ParamsError(f"unknown backend {kind!r}; use {', '.join(BACKENDS[:-1])} or "
                      f"{BACKENDS[-1]}")
