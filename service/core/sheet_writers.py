"""New spritesheet metadata for a sheet this service made (an animation's cells).

:func:`aseprite_json` writes Aseprite's array JSON (``frames`` with ``frame``/``duration``, a
``frameTags`` entry for the animation, ``repeat: "1"`` when it does not loop, and under
``meta.aat.frames`` each frame's ``{"attempt", "seed"}``: which generation made its pixels,
read back by :func:`recorded_frames` so a regeneration tries the next attempt and keeps the
others' records; engines ignore keys of ``meta`` they do not know);
:func:`godot_sprite_frames` a Godot 4 ``SpriteFrames`` resource (one ``AtlasTexture`` per cell
on the sheet, the animation's name, speed in FPS and loop flag). Both are read back by
:mod:`service.core.sheets` (the upscale path takes such a sheet with its cells). Pure text.
"""

from __future__ import annotations

import json

Rect = tuple[int, int, int, int]


FrameRecord = tuple[int, int]  # (attempt, seed) of one frame


def aseprite_json(image_name: str, size: tuple[int, int], rects: list[Rect], *, name: str,
                  fps: int, loop: bool, records: list[FrameRecord] | None = None) -> str:
    duration = max(1, round(1000 / fps))
    frames = [{
        "filename": f"{name} {i}.png",
        "frame": {"x": x, "y": y, "w": w, "h": h},
        "rotated": False, "trimmed": False,
        "spriteSourceSize": {"x": 0, "y": 0, "w": w, "h": h},
        "sourceSize": {"w": w, "h": h},
        "duration": duration,
    } for i, (x, y, w, h) in enumerate(rects)]
    tag: dict[str, object] = {"name": name, "from": 0, "to": len(rects) - 1,
                              "direction": "forward", "color": "#000000ff"}
    if not loop:
        tag["repeat"] = "1"
    meta: dict[str, object] = {"app": "https://www.aseprite.org/", "version": "1.3", "image": image_name,
            "format": "RGBA8888", "size": {"w": size[0], "h": size[1]}, "scale": "1",
            "frameTags": [tag], "layers": [{"name": "Layer", "opacity": 255,
                                            "blendMode": "normal"}], "slices": []}
    if records is not None:
        meta["aat"] = {"frames": [{"attempt": a, "seed": s} for a, s in records]}
    return json.dumps({"frames": frames, "meta": meta}, indent=1) + "\n"


def recorded_frames(text: str, frames: int) -> list[FrameRecord] | None:
    """The ``(attempt, seed)`` of each frame an :func:`aseprite_json` recorded, or ``None``
    when ``text`` records none for ``frames`` frames (a sheet from elsewhere or older)."""
    try:
        meta = json.loads(text).get("meta") or {}
        rows = meta["aat"]["frames"]
        out = [(int(r["attempt"]), int(r["seed"])) for r in rows]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return out if len(out) == frames else None


def godot_sprite_frames(res_path: str, rects: list[Rect], *, name: str, fps: int,
                        loop: bool) -> str:
    """``res_path`` is the sheet's ``res://`` path (as the engine will load it)."""
    lines = [f'[gd_resource type="SpriteFrames" load_steps={len(rects) + 2} format=3]', "",
             f'[ext_resource type="Texture2D" path="{res_path}" id="1_sheet"]', ""]
    for i, (x, y, w, h) in enumerate(rects):
        lines += [f'[sub_resource type="AtlasTexture" id="AtlasTexture_{i}"]',
                  'atlas = ExtResource("1_sheet")', f"region = Rect2({x}, {y}, {w}, {h})", ""]
    entries = ", ".join(
        f'{{\n"duration": 1.0,\n"texture": SubResource("AtlasTexture_{i}")\n}}'
        for i in range(len(rects)))
    lines += ["[resource]", "animations = [{", f'"frames": [{entries}],',
              f'"loop": {"true" if loop else "false"},', f'"name": &"{name}",',
              f'"speed": {float(fps)}', "}]", ""]
    return "\n".join(lines)
