"""Intake checks run before anything is stored: the image decodes within the limits and the
requested output size is allowed (``service.core.imaging`` does the work)."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.imaging import (
    ImageLimits,
    check_output_size,
    load_image,
    output_format_for,
)
from service.core.params import UpscaleParams
from service.settings import Settings

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
    params: UpscaleParams  # resolved for this input: asset type (and why), sheet checked


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
    """Decode ``data`` fully (catching truncation), check the output size and resolve the
    params for this input (:meth:`UpscaleParams.resolved_for`: ``asset_type`` from the file
    name and pixels); raises ImageError/ParamsError."""
    limits = limits_for(settings)
    loaded = load_image(data, limits=limits)
    params = params.resolved_for(filename, loaded.rgb, loaded.alpha)
    out_w, out_h = params.target_size(loaded.width, loaded.height)
    check_output_size(out_w, out_h, limits)
    fmt = output_format_for(loaded.format, params.output_format)
    return IntakeInfo(width=loaded.width, height=loaded.height, format=loaded.format,
                      ext=INPUT_EXT.get(loaded.format, ".img"), output_format=fmt,
                      output_ext=EXT_FOR_FORMAT[fmt],
                      label=naming_label(params, loaded.width, loaded.height), params=params)
