"""The diffusion knobs declared once (:class:`DiffusionSettings`), with the LoRA name rule.

Split from :mod:`service.core.params` so that what only needs the knobs and their defaults
(`aat upscale`'s options, the worker contract) imports pydantic alone, not the asset rules and
numpy that job parameters need. ``service.core.params`` re-exports everything here.
Pure: no I/O, no settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SeamFix = Literal["none", "band", "offset"]
NamingMode = Literal["suffix", "replace", "mirror"]
ColourFix = Literal["none", "wavelet", "adain"]
IpAdapterMode = Literal["full", "style"]
Quality = Literal["standard", "fast"]
Scheduler = Literal["dpmpp_2m_sde_karras", "dpmpp_2m_karras", "euler", "euler_a", "unipc", "ddim"]


# The one rule for a LoRA's name on the worker volume (the API's routes and job params, and
# the worker itself): starts with a letter or digit, then letters, digits, ``_``, ``-``,
# space, with single dots between parts (no ``..``, no leading or trailing dot). A name
# without ``.safetensors`` gets it added by the worker. JSON-Schema-safe (no lookarounds).
LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_ -]*(\.[A-Za-z0-9_ -]+)*$"
LORA_NAME_MAX = 190
# An uploaded file's name: the same rule, ending in ``.safetensors``.
LORA_UPLOAD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_ -]*(\.[A-Za-z0-9_ -]+)*\.safetensors$"


class LoraSpec(BaseModel):
    """One LoRA from the upscale worker's volume, stacked with a weight."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=LORA_NAME_MAX, pattern=LORA_NAME_PATTERN)
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)


class DiffusionSettings(BaseModel):
    """The job-wide SDXL refine knobs, declared once for every layer that carries them.

    Per-tile values (the caption appended to ``prompt``, the tile's seed) travel with the tile.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="", max_length=4000)  # global style prompt
    negative_prompt: str = Field(default="", max_length=4000)
    strength: float = Field(default=0.35, ge=0.0, le=1.0)
    steps: int = Field(default=30, ge=1, le=100)
    cfg_scale: float = Field(default=7.0, ge=1.0, le=20.0)
    scheduler: Scheduler = "dpmpp_2m_sde_karras"
    clip_skip: int = Field(default=2, ge=1, le=12, description=(
        "counted the way A1111 and ComfyUI users know it: 1 = the text encoders' last layer, "
        "2 = the penultimate one (SDXL's default; what \"clip skip 2\" means for Illustrious "
        "and Pony models), 3 = one layer earlier, ..."))
    controlnet_scale: float = Field(default=0.7, ge=0.0, le=2.0)
    ip_adapter_scale: float = Field(default=0.0, ge=0.0, le=1.0)
    ip_adapter_mode: IpAdapterMode = Field(default="full", description=(
        "full: the style image reaches every attention block (style and content); style: only "
        "the block that carries style (InstantStyle-like), so its objects and layout do not "
        "bleed in"))
    quality: Quality = Field(default="standard", description=(
        "standard: steps, cfg_scale and scheduler as given; fast: a distilled few-step LoRA "
        "baked into the worker, 4 steps without CFG (about 5x less UNet work; the negative "
        "prompt and cfg_scale no longer apply and fine detail is flatter)"))
    loras: list[LoraSpec] = Field(default_factory=list, max_length=8)

    def diffusion_kwargs(self) -> dict[str, Any]:
        """This object's diffusion knobs as keyword arguments for another layer's model."""
        return {name: getattr(self, name) for name in DiffusionSettings.model_fields}
