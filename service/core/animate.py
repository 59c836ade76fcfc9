"""The ``animate`` job's vocabulary: motions, parameters and the per-frame edit prompts.

An animation turns one sprite into ``frames`` poses of a motion. Each frame is one image edit
of the source sprite (Qwen-Image-Edit: "the same character, <pose>"), generated on a flat key
colour that :mod:`service.core.frames` turns back into alpha. A motion is a preset name
(:data:`MOTIONS`: idle, walk, run, attack, jump, hit, death) or ``custom`` with free text in
``motion_text``; free text may also refine a preset. A name that is neither is a
``motion_unknown`` :class:`~service.core.errors.ParamsError`.

Pure: no I/O, no settings.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.errors import ParamsError

# Each preset: the poses of one cycle (sampled evenly for the frame count), whether it loops,
# and a default frames-per-second.
MOTIONS: dict[str, tuple[tuple[str, ...], bool, int]] = {
    "idle": (("standing relaxed, breathing in", "standing, chest slightly raised",
              "standing relaxed, breathing out", "standing, shoulders slightly lowered"), True, 6),
    "walk": (("walking, left foot forward, heel touching the ground",
              "walking, left foot flat, weight on the left leg",
              "walking, right leg passing the left, body at its highest",
              "walking, right foot reaching forward",
              "walking, right foot forward, heel touching the ground",
              "walking, right foot flat, weight on the right leg",
              "walking, left leg passing the right, body at its highest",
              "walking, left foot reaching forward"), True, 10),
    "run": (("running, left foot striking the ground", "running, pushing off with the left foot",
             "running, both feet off the ground, right knee high",
             "running, right foot striking the ground", "running, pushing off with the right foot",
             "running, both feet off the ground, left knee high"), True, 12),
    "attack": (("ready stance, weapon raised", "winding up the attack, body turned back",
                "striking forward at full extension", "follow-through after the strike",
                "returning to the ready stance"), False, 12),
    "jump": (("crouching before the jump", "leaving the ground, legs extending",
              "rising in the air, knees tucked", "at the top of the jump",
              "falling, legs reaching down", "landing in a crouch"), False, 10),
    "hit": (("recoiling from a hit, head snapped back", "staggering backwards",
             "recovering balance", "back in the ready stance"), False, 10),
    "death": (("hit hard, knees buckling", "falling backwards", "hitting the ground",
               "lying motionless on the ground"), False, 8),
}
FACINGS = ("right", "left", "front", "back")
MIN_FRAMES, MAX_FRAMES = 2, 16
_WXH = r"^[1-9][0-9]{0,3}x[1-9][0-9]{0,3}$"


class AnimateParams(BaseModel):
    """What to animate and how the sheet is laid out (the REST/CLI/job parameters)."""

    model_config = ConfigDict(extra="forbid")

    motion: str = Field(default="walk", min_length=1, max_length=40, description=(
        "A preset (idle, walk, run, attack, jump, hit, death) or 'custom' with motion_text."))
    motion_text: str | None = Field(default=None, max_length=400, description=(
        "Free text describing the motion (required for 'custom'; refines a preset)."))
    frames: int = Field(default=8, ge=MIN_FRAMES, le=MAX_FRAMES)
    facing: Literal["right", "left", "front", "back"] = "right"
    frame_size: str | None = Field(default=None, pattern=_WXH, description=(
        "Cell size WxH in pixels; default: the sprite's size."))
    layout: Literal["row", "grid"] = "row"
    fps: int | None = Field(default=None, ge=1, le=60, description="Default: the motion's.")
    loop: bool | None = Field(default=None, description="Default: the motion's.")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,40}$", description=(
        "Animation name in the metadata; default: the motion."))
    anchor: Literal["feet", "centre"] = "feet"
    key_colour: str = Field(default="#00ff00", pattern=r"^#[0-9a-fA-F]{6}$")
    style: str | None = Field(default=None, max_length=400)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _motion_known(self) -> AnimateParams:
        check_motion(self.motion, self.motion_text)
        return self

    def cycle_fps(self) -> int:
        return self.fps or (MOTIONS[self.motion][2] if self.motion in MOTIONS else 10)

    def loops(self) -> bool:
        if self.loop is not None:
            return self.loop
        return MOTIONS[self.motion][1] if self.motion in MOTIONS else True

    def animation_name(self) -> str:
        return self.name or (self.motion if self.motion in MOTIONS else "custom")

    def key_rgb(self) -> tuple[int, int, int]:
        v = self.key_colour.lstrip("#")
        return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)


def check_motion(motion: str, text: str | None) -> None:
    """ParamsError ``motion_unknown`` unless ``motion`` is a preset or ``custom`` with text."""
    if motion == "custom":
        if not (text or "").strip():
            raise ParamsError("motion 'custom' needs motion_text describing the movement",
                              code="motion_unknown")
        return
    if motion not in MOTIONS:
        raise ParamsError(f"unknown motion {motion!r}; choose one of "
                          f"{', '.join(MOTIONS)} or 'custom' with a description",
                          code="motion_unknown")


def poses(params: AnimateParams) -> list[str]:
    """One pose description per frame: the preset's cycle sampled evenly (custom: phases)."""
    n = params.frames
    if params.motion not in MOTIONS:
        return [f"{params.motion_text}, phase {i + 1} of {n}" for i in range(n)]
    cycle = MOTIONS[params.motion][0]
    return [cycle[(i * len(cycle)) // n] for i in range(n)]


def frame_prompts(params: AnimateParams) -> list[str]:
    """The edit instruction of each frame (what the edit model is asked to draw)."""
    key = params.key_colour.lower()
    extra = f", {params.motion_text}" if params.motion_text and params.motion in MOTIONS else ""
    style = f" Style: {params.style}." if params.style else ""
    return [
        f"The same character, same design, colours, outline and proportions, facing "
        f"{params.facing}, {pose}{extra}. Full body, same scale, centred, on a flat solid "
        f"{key} background, no shadow, no ground, no text.{style}"
        for pose in poses(params)
    ]


def frame_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The seed of frame ``index`` (a regeneration passes ``attempt`` > 0 for a new one)."""
    digest = hashlib.sha256(f"{seed}:{index}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)
