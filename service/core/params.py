"""Job parameters: what a user asks of one upscale job, validated with limits.

``UpscaleParams`` is the single typed description of a job's knobs, shared by the CLI, the REST
API, the watcher presets, the orchestrator and (translated by the backends) the GPU workers.
``canonical_json`` gives the stable form hashed into a job's dedupe key.
Pure: no I/O, no settings.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_OUTPUT_SIDE = 16384

SeamFix = Literal["none", "band", "offset"]
NamingMode = Literal["suffix", "replace", "mirror"]
ColourFix = Literal["none", "wavelet", "adain"]
Scheduler = Literal["dpmpp_2m_sde_karras", "dpmpp_2m_karras", "euler", "euler_a", "unipc", "ddim"]


class LoraSpec(BaseModel):
    """One LoRA from the upscale worker's volume, stacked with a weight."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._ -]+$")
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)


class UpscaleParams(BaseModel):
    """Everything that changes the pixels of a job's output.

    Size: give ``scale`` or ``width``/``height`` (one side keeps the aspect ratio).
    """

    model_config = ConfigDict(extra="forbid")

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

    # diffusion refine (ignored by the `none` backend)
    prompt: str = Field(default="", max_length=4000)
    negative_prompt: str = Field(default="", max_length=4000)
    caption: bool = True
    strength: float = Field(default=0.35, ge=0.0, le=1.0)
    steps: int = Field(default=30, ge=1, le=100)
    cfg_scale: float = Field(default=7.0, ge=1.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    scheduler: Scheduler = "dpmpp_2m_sde_karras"
    clip_skip: int = Field(default=0, ge=0, le=4)
    controlnet_scale: float = Field(default=0.7, ge=0.0, le=2.0)
    ip_adapter_scale: float = Field(default=0.0, ge=0.0, le=1.0)
    style_image_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    loras: list[LoraSpec] = Field(default_factory=list, max_length=8)

    # output
    output_format: Literal["auto", "png", "webp", "jpeg", "tga"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> UpscaleParams:
        if self.scale is None and self.width is None and self.height is None:
            self.scale = 2.0
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either scale or width/height, not both")
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

    def canonical_json(self) -> str:
        """Stable JSON (sorted keys, no whitespace) used in dedupe keys."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
