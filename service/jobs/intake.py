"""Intake checks run before anything is stored: the image decodes within the limits and the
requested output size is allowed (``service.core.imaging`` does the work); and every ``auto`` a
job can carry is resolved once, here, at submit (:func:`resolve_at_submit`)."""

from __future__ import annotations

from dataclasses import dataclass

from service.core import formats
from service.core.imaging import LoadedImage, check_output_size, load_image, output_format_for
from service.core.naming import size_tag
from service.core.params import UpscaleParams
from service.settings import Settings
from service.upscalers.registry import resolve_upscaler


@dataclass(frozen=True)
class IntakeInfo:
    width: int
    height: int
    format: str  # Pillow format name of the input
    ext: str  # the input's file suffix in the artifact store
    output_format: str
    output_ext: str
    label: str  # naming suffix for `suffix` delivery, e.g. "_x2"
    params: UpscaleParams  # resolved for this input: asset type (and why), base upscaler
    backend: str  # the GPU backend the job runs on: "none", "runpod" or "local"


def probe_image(data: bytes, params: UpscaleParams, settings: Settings,
                filename: str | None = None) -> IntakeInfo:
    """Decode ``data`` fully (catching truncation), check the output size and resolve every
    ``auto`` (:func:`resolve_at_submit`); raises ImageError/ParamsError."""
    limits = settings.image_limits()
    loaded = load_image(data, limits=limits)
    params, backend = resolve_at_submit(params, settings, filename, loaded)
    out_w, out_h = params.target_size(loaded.width, loaded.height)
    check_output_size(out_w, out_h, limits)
    fmt = output_format_for(loaded.format, params.output_format)
    return IntakeInfo(width=loaded.width, height=loaded.height, format=loaded.format,
                      ext=formats.input_suffix(loaded.format), output_format=fmt,
                      output_ext=formats.suffix_for(fmt),
                      label=size_tag(params, (loaded.width, loaded.height)), params=params,
                      backend=backend)


def resolve_at_submit(params: UpscaleParams, settings: Settings, filename: str | None,
                      loaded: LoadedImage) -> tuple[UpscaleParams, str]:
    """Every ``auto`` of a job, resolved once when it is submitted: the params with
    ``asset_type`` (and its reason) and ``upscaler`` made concrete, and the GPU backend.

    The job stores what this returns, its dedupe key hashes it, and every attempt runs with it,
    so a resumed job makes the pixels its first attempt would have made, and a file submitted
    again after ``auto`` came to mean something else (a model upscaler installed, a RunPod
    key added) becomes a new job instead of the old result. A new ``auto`` belongs here."""
    params = params.resolved_for(filename, loaded.rgb, loaded.alpha)
    params = params.model_copy(update={"upscaler": resolve_upscaler(params.upscaler)})
    return params, settings.effective_backend
