"""The studio forms' fields, read from the public job-parameter schemas (the ones in OpenAPI).

Every ``UpscaleParams`` field (the new-job form) and every ``AnimateParams`` field (the Animate
form) becomes a labelled control with its default and limits; enums become choices, so a
parameter added to the API appears on the page without a template change. Fields the page
draws by hand (size, LoRAs, the style image) are left out here. The plain-word labels, the
order and the motion presets' names (from :data:`service.core.animate.MOTIONS`) are the only
things this module adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.core.animate import MOTIONS, AnimateParams
from service.core.params import UpscaleParams

# Drawn by the page itself: size choices, LoRAs with weights, the style image reference.
HAND_DRAWN = {"scale", "width", "height", "loras", "style_image_sha256"}
READ_ONLY = {"asset_reason"}  # set by the service at submit

LABELS: dict[str, tuple[str, str]] = {
    "upscaler": ("Base upscaler", "how the image is enlarged before diffusion (auto picks "
                 "the best installed)"),
    "tile_size": ("Tile size (px)", "each tile is refined on its own"),
    "overlap": ("Tile overlap (px)", "blended between neighbours to hide seams"),
    "seam_fix": ("Seam fix", "an extra pass over the seams"),
    "seam_fix_strength": ("Seam fix strength", ""),
    "tileable": ("Tileable texture", "wrap around the edges"),
    "colour_fix": ("Colour fix", "keep the colours of the original"),
    "prompt": ("Style prompt", "added to every tile's caption"),
    "negative_prompt": ("Negative prompt", "what to avoid"),
    "caption": ("Caption tiles", "describe each tile with a vision model first"),
    "strength": ("Strength", "how much diffusion may change (0 = nothing)"),
    "steps": ("Steps", ""),
    "cfg_scale": ("CFG scale", "how closely to follow the prompt"),
    "seed": ("Seed", "empty = random"),
    "scheduler": ("Scheduler", "the sampler; the default suits SDXL refining"),
    "clip_skip": ("CLIP skip", ""),
    "ip_adapter_mode": ("IP-Adapter reach", ""),
    "quality": ("Quality", ""),
    "controlnet_scale": ("ControlNet tile scale", "how closely to keep the shapes"),
    "ip_adapter_scale": ("IP-Adapter style scale", "0 = no style image"),
    "output_format": ("Output format", "auto keeps the input's format"),
    "asset_type": ("Asset type", ""),
    "sheet": ("Spritesheet grid", "e.g. 8x4 (columns x rows) or cell=32x32,margin=1,spacing=2; "
              "empty = not a sheet"),
    "diffusion": ("Diffusion", "auto decides by asset type"),
    "pixel_scaler": ("Pixel-art scaler", ""),
    "matte": ("Matte", "background for transparency in formats without alpha"),
    "keep_game_size": ("Keep game size (Unity)", ""),
}
ANIMATE_LABELS: dict[str, tuple[str, str]] = {
    "motion": ("Motion", "a preset, or custom with a description below"),
    "motion_text": ("Motion description", "free text: required for custom, refines a preset "
                    "(e.g. swinging a sword)"),
    "frames": ("Frames", "2 to 16"),
    "facing": ("Facing", "the direction the character looks"),
    "frame_size": ("Frame size (W×H px)", "e.g. 32x32; empty = the sprite's size"),
    "layout": ("Layout", "row = all frames in one row, grid = about square"),
    "fps": ("Frames per second", "empty = the motion's own speed"),
    "loop": ("Loop", "auto = the motion's own (walk loops, death does not)"),
    "name": ("Animation name", "in the Aseprite and Godot files; empty = the motion"),
    "anchor": ("Anchor", "what stays in place between frames: the feet or the centre"),
    "key_colour": ("Key colour", "the flat background frames are generated on, then keyed "
                   "to transparency"),
    "style": ("Style", "style words added to every frame (optional)"),
    "seed": ("Seed", "each frame derives its own from it"),
}
ANIMATE_ADVANCED = {"anchor", "key_colour", "name"}
# A field the schema types as free text but the page offers as choices.
ANIMATE_CHOICES = {"motion": [*MOTIONS, "custom"]}

ADVANCED = {"seam_fix_strength", "colour_fix", "scheduler", "clip_skip", "ip_adapter_scale",
            "ip_adapter_mode",
            "matte", "keep_game_size", "pixel_scaler", "diffusion"}


@dataclass
class FormField:
    """One control: ``kind`` is select, tristate (auto/yes/no), checkbox, number, text or
    textarea."""

    name: str
    label: str
    hint: str
    kind: str
    default: Any = None
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"
    advanced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional field."""
    if "anyOf" in schema:
        branch: dict[str, Any] = next(
            (s for s in schema["anyOf"] if s.get("type") != "null"), {})
        return {**branch, **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _field(name: str, raw: dict[str, Any], defs: dict[str, Any], *,
           labels: dict[str, tuple[str, str]], advanced: set[str],
           choices: dict[str, list[str]]) -> FormField:
    schema = _plain(raw)
    if "$ref" in schema:
        schema = {**defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), **schema}
    if name in choices:
        schema = {**schema, "enum": choices[name]}
    # tests/studio/test_studio_api.py fails for a parameter without a plain-word label
    label, hint = labels.get(name, (name.replace("_", " ").capitalize(), ""))
    common: dict[str, Any] = {"name": name, "label": label,
                              "hint": hint or schema.get("description", ""),
              "default": schema.get("default"), "advanced": name in advanced}
    if "enum" in schema:
        return FormField(kind="select", choices=[str(c) for c in schema["enum"]], **common)
    kind = schema.get("type")
    if kind == "boolean" and "anyOf" in raw:  # true / false / null (= decided by the service)
        return FormField(kind="tristate", choices=["", "true", "false"],
                         **{**common, "default": ""})
    if kind == "boolean":
        return FormField(kind="checkbox", **common)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return FormField(kind="number", minimum=low, maximum=schema.get("maximum"),
                         step="1" if kind == "integer" else "any", **common)
    if name in ("prompt", "negative_prompt"):
        return FormField(kind="textarea", **common)
    return FormField(kind="text", extra={"maxlength": schema.get("maxLength")}, **common)


def _fields(model: type[BaseModel], *, skip: set[str], labels: dict[str, tuple[str, str]],
            advanced: set[str], choices: dict[str, list[str]] | None = None) -> list[FormField]:
    """``model``'s controls, in the order of its schema (plain words first)."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    fields = [_field(name, raw, defs, labels=labels, advanced=advanced, choices=choices or {})
              for name, raw in schema["properties"].items() if name not in skip]
    return sorted(fields, key=lambda f: f.advanced)


def form_fields() -> list[FormField]:
    """The new-job (upscale) form's controls."""
    return _fields(UpscaleParams, skip=HAND_DRAWN | READ_ONLY, labels=LABELS, advanced=ADVANCED)


def animate_fields() -> list[FormField]:
    """The Animate form's controls (every ``AnimateParams`` field)."""
    return _fields(AnimateParams, skip=set(), labels=ANIMATE_LABELS, advanced=ANIMATE_ADVANCED,
                   choices=ANIMATE_CHOICES)
