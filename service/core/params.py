"""Job parameters: what a user asks of one upscale job, validated with limits.

``UpscaleParams`` is the single typed description of a job's knobs, shared by the CLI, the REST
API, the watcher presets, the orchestrator and (translated by the backends) the GPU workers.
``canonical_json`` gives the stable form hashed into a job's dedupe key.

``DiffusionSettings`` declares the job-wide diffusion knobs (names, defaults, limits) ONCE; the
job parameters, the worker contract (``contracts.UpscaleRequest``), the backends' options
(``backends.base.RefineOptions``) and the worker pipeline (``RefineSettings``) all subclass it,
so a knob added or re-limited here reaches every layer, and ``diffusion_kwargs`` hands the same
values from one layer to the next without a hand-written field list.
Pure: no I/O, no settings.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from service.core.alpha import is_opaque, parse_matte
from service.core.assets import (
    DETERMINISTIC,
    AssetType,
    AssetTypeChoice,
    Detection,
    detect_asset_type,
)
from service.core.diffusion import (  # re-exported: the knobs belong to the job parameters
    LORA_NAME_MAX as LORA_NAME_MAX,
)
from service.core.diffusion import (
    LORA_NAME_PATTERN as LORA_NAME_PATTERN,
)
from service.core.diffusion import (
    LORA_UPLOAD_PATTERN as LORA_UPLOAD_PATTERN,
)
from service.core.diffusion import (
    ColourFix as ColourFix,
)
from service.core.diffusion import (
    DiffusionSettings as DiffusionSettings,
)
from service.core.diffusion import (
    IpAdapterMode as IpAdapterMode,
)
from service.core.diffusion import (
    LoraSpec as LoraSpec,
)
from service.core.diffusion import (
    NamingMode as NamingMode,
)
from service.core.diffusion import (
    Quality as Quality,
)
from service.core.diffusion import (
    Scheduler as Scheduler,
)
from service.core.diffusion import (
    SeamFix as SeamFix,
)
from service.core.errors import ParamsError
from service.core.pixelart import PixelScaler, integer_factor
from service.core.sheets import SheetParams, layout_for, parse_sheet_spec

MAX_OUTPUT_SIDE = 16384



class UpscaleParams(DiffusionSettings):
    """Everything that changes the pixels of a job's output.

    Size: give ``scale`` or ``width``/``height`` (one side keeps the aspect ratio).
    The diffusion knobs come from :class:`DiffusionSettings` (ignored by the ``none`` backend).
    """

    scale: float | None = Field(default=None, gt=0.0, le=8.0)
    width: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_SIDE)
    upscaler: str = Field(default="auto", max_length=64)
    tile_size: int = Field(default=1024, ge=64, le=4096)
    overlap: int = Field(default=128, ge=0, le=2048)
    seam_fix: SeamFix = "none"
    seam_fix_strength: float = Field(default=0.35, ge=0.0, le=1.0)
    tileable: bool = False
    colour_fix: ColourFix = "wavelet"

    # diffusion refine beyond the shared knobs
    caption: bool = True
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    style_image_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    # game assets (docs/guide/asset-types.md)
    asset_type: AssetTypeChoice = Field(default="auto", description=(
        "What kind of game art this is; decides the path. auto: detected at submit from the "
        "file name (_n, _normal, _orm, _rough, _h, ...) and the pixels. normal, mask and "
        "pixel_art never diffuse."))
    asset_reason: str | None = Field(default=None, max_length=300, description=(
        "Set by the service when the job is submitted: why this asset_type was used "
        "(read-only; a value sent in is replaced)."))
    sheet: SheetParams | None = Field(default=None, description=(
        "Process a spritesheet cell by cell (tiles never cross a cell border). Also accepts "
        "a string: '8x4' (COLSxROWS), 'cell=32x32,margin=1,spacing=2'."))
    pixel_scaler: PixelScaler = Field(default="epx", description=(
        "pixel_art only: epx (Scale2x/3x family; 2, 3, 4, 6, 8, 9x) or nearest (any integer "
        "factor). The output uses only the input's colours."))
    diffusion: bool | None = Field(default=None, description=(
        "null: by asset type (sprite/texture/ui/illustration diffuse; normal, mask, pixel_art do "
        "not). true on pixel_art diffuses, then locks the result to the input's palette. "
        "false skips diffusion for any type."))
    keep_game_size: bool = Field(default=True, description=(
        "Unity: scale spritePixelsToUnits and 9-slice borders in the .meta by the factor, so "
        "the sprite keeps its size in the game."))
    matte: str = Field(default="#ffffff", max_length=16, description=(
        "Background for transparent pixels when the output format has no alpha (JPEG): "
        "#rrggbb, white, black or grey. A warning is recorded."))

    # output
    output_format: Literal["auto", "png", "webp", "jpeg", "tga", "dds"] = "auto"

    @field_validator("sheet", mode="before")
    @classmethod
    def _sheet_text(cls, value: object) -> object:
        return parse_sheet_spec(value) if isinstance(value, str) else value

    @field_validator("matte")
    @classmethod
    def _matte_colour(cls, value: str) -> str:
        parse_matte(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> UpscaleParams:
        if self.scale is None and self.width is None and self.height is None:
            self.scale = 2.0
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either scale or width/height, not both")
        if self.asset_type in ("normal", "mask") and self.diffusion:
            raise ValueError(f"{self.asset_type} maps are data and never diffused; drop "
                             "diffusion=true or choose another asset_type")
        if self.overlap >= self.tile_size:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than tile_size ({self.tile_size})"
            )
        return self

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """Output size for an input of ``width`` x ``height`` (rounded, at least 1 px)."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.width is not None:
            return self.width, max(1, round(height * self.width / width))
        if self.height is not None:
            return max(1, round(width * self.height / height)), self.height
        assert self.scale is not None
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))

    @property
    def diffuses(self) -> bool:
        """Whether this job's asset type takes the diffusion path (``auto`` counts as yes)."""
        if self.diffusion is not None:
            return self.diffusion and self.asset_type not in ("normal", "mask")
        return self.asset_type not in DETERMINISTIC

    def for_asset(self, detection: Detection) -> UpscaleParams:
        """These params with ``asset_type`` resolved, and the defaults that suit the type for
        every knob the user did not set: UI diffuses more gently, a wrapping texture is
        tileable."""
        changes: dict[str, object] = {"asset_type": detection.asset_type,
                                      "asset_reason": detection.summary()}
        chosen = self.model_fields_set
        if detection.asset_type == "ui" and "strength" not in chosen:
            changes["strength"] = min(self.strength, 0.25)
        if detection.hint("tileable") == "true" and "tileable" not in chosen:
            changes["tileable"] = True
        if detection.asset_type == "pixel_art" and self.asset_type == "auto" and self.loras \
                and "diffusion" not in chosen:
            # LoRAs only act in diffusion: a job naming them asks for it (palette-locked)
            changes["diffusion"] = True
            changes["asset_reason"] = f"{detection.summary()}; diffused because LoRAs are set"
        return self.model_copy(update=changes)

    def resolved_for(self, filename: str | None, rgb: np.ndarray,
                     alpha: np.ndarray | None = None) -> UpscaleParams:
        """These params for one decoded input: ``asset_type`` resolved (with its reason and the
        type's defaults, :meth:`for_asset`), and the sheet and pixel-art geometry checked
        (ParamsError with a clear message when a sheet does not fit or a scale is not an
        integer where one is needed). Called once, when a job is submitted or `aat upscale`
        starts, so a job never changes its mind later."""
        height, width = rgb.shape[:2]
        detection = detect_asset_type(filename, rgb, alpha, requested=self.asset_type)
        out_w, out_h = self.target_size(width, height)
        integer = integer_factor((width, height), (out_w, out_h)) is not None
        if detection.asset_type == "pixel_art" and detection.by != "user" and not integer:
            # detected, not asked for: a size pixel art cannot take falls back to the colour path
            kind: AssetType = "sprite" if alpha is not None and not is_opaque(alpha) \
                else "illustration"
            detection = Detection(kind, detection.by, f"looks like pixel art ({detection.reason})"
                                  f" but {width}x{height} -> {out_w}x{out_h} is not an integer "
                                  f"scale, so {kind}")
        resolved = self.for_asset(detection)
        if resolved.sheet is not None:
            layout_for(resolved.sheet, width, height)
            if integer_factor((width, height), (out_w, out_h)) is None:
                raise ParamsError(f"a spritesheet needs an integer scale (2, 3, 4...); "
                                  f"{width}x{height} -> {out_w}x{out_h} is not one",
                                  code="sheet_invalid")
        if resolved.asset_type == "pixel_art" and \
                integer_factor((width, height), (out_w, out_h)) is None:
            raise ParamsError(f"pixel art needs an integer scale (2, 3, 4...); {width}x{height}"
                              f" -> {out_w}x{out_h} is not one; or choose another asset_type")
        return resolved

    def canonical_json(self) -> str:
        """Stable JSON (sorted keys, no whitespace) used in dedupe keys."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
