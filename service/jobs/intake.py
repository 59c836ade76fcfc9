"""Intake checks run before anything is stored: the image decodes within the limits and the
requested output size is allowed (``service.core.imaging`` does the work); and every ``auto`` a
job can carry is resolved once, here, at submit (:func:`resolve_at_submit`)."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.imaging import (
    ImageLimits,
    LoadedImage,
    check_output_size,
    load_image,
    output_format_for,
)
from service.core.params import UpscaleParams
from service.settings import Settings
from service.upscalers.registry import resolve_upscaler

EXT_FOR_FORMAT = {"png": ".png", "webp": ".webp", "jpeg": ".jpg", "tga": ".tga", "dds": ".dds"}
INPUT_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TGA": ".tga", "DDS": ".dds",
             "BMP": ".bmp", "GIF": ".gif"}


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


def limits_for(settings: Settings) -> ImageLimits:
    return ImageLimits(max_input_pixels=settings.max_input_pixels,
                       max_input_side=settings.max_input_side,
                       max_output_side=settings.max_output_side)


def naming_label(params: UpscaleParams, width: int, height: int) -> str:
    """``_x2`` for a scale, ``_<w>x<h>`` for an explicit size."""
    if params.scale is not None:
        return f"_x{params.scale:g}"
    out_w, out_h = params.target_size(width, height)
    return f"_{out_w}x{out_h}"


def probe_image(data: bytes, params: UpscaleParams, settings: Settings,
                filename: str | None = None) -> IntakeInfo:
    """Decode ``data`` fully (catching truncation), check the output size and resolve every
    ``auto`` (:func:`resolve_at_submit`); raises ImageError/ParamsError."""
    limits = limits_for(settings)
    loaded = load_image(data, limits=limits)
    params, backend = resolve_at_submit(params, settings, filename, loaded)
    out_w, out_h = params.target_size(loaded.width, loaded.height)
    check_output_size(out_w, out_h, limits)
    fmt = output_format_for(loaded.format, params.output_format)
    return IntakeInfo(width=loaded.width, height=loaded.height, format=loaded.format,
                      ext=INPUT_EXT.get(loaded.format, ".img"), output_format=fmt,
                      output_ext=EXT_FOR_FORMAT[fmt],
                      label=naming_label(params, loaded.width, loaded.height), params=params,
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
