"""Add-on preferences (server URL, token, where results go) and the per-scene job settings.

Preferences live in Blender's ``userpref.blend``, never in the user's .blend; the token is a
PASSWORD field. The job knobs (scale, strength, prompt, seam fix, LoRAs) are a property group on
the scene, so they travel with the file.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    PointerProperty,
    StringProperty,
)

DEFAULT_URL = "http://127.0.0.1:8765"


class AAT_Preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    server_url: StringProperty(  # type: ignore[valid-type]
        name="Server URL", default=DEFAULT_URL,
        description="Address of the AI Assets Toolbox API (`aat up` prints it)")
    api_token: StringProperty(  # type: ignore[valid-type]
        name="API token", subtype="PASSWORD", default="",
        description="The server's AAT_API_TOKEN (leave empty for a token-less loopback server)")
    result_mode: EnumProperty(  # type: ignore[valid-type]
        name="Result",
        items=[("REPLACE", "Replace image", "Point the image at the result; every material "
                "using it follows"),
               ("NEW", "New image", "Load the result as a new image and keep the original")],
        default="REPLACE")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "server_url")
        layout.prop(self, "api_token")
        layout.prop(self, "result_mode")
        if not bpy.app.online_access:
            layout.label(text="Online access is off: only 127.0.0.1/localhost servers work",
                         icon="INFO")


class AAT_LoraItem(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="Use", default=False)  # type: ignore[valid-type]
    weight: FloatProperty(name="Weight", default=1.0, min=-4.0, max=4.0)  # type: ignore[valid-type]


class AAT_JobSettings(bpy.types.PropertyGroup):
    scale: FloatProperty(  # type: ignore[valid-type]
        name="Scale", default=2.0, min=1.0, max=8.0, step=50, precision=1)
    strength: FloatProperty(  # type: ignore[valid-type]
        name="Strength", default=0.35, min=0.0, max=1.0,
        description="How much the diffusion refine may change the image")
    prompt: StringProperty(name="Prompt", default="")  # type: ignore[valid-type]
    seam_fix: EnumProperty(  # type: ignore[valid-type]
        name="Seam fix", default="none",
        items=[("none", "None", "No seam-fix pass"), ("band", "Band", "Re-refine tile seams"),
               ("offset", "Offset", "Second pass on a half-tile offset grid")])
    loras: CollectionProperty(type=AAT_LoraItem)  # type: ignore[valid-type]


def preferences(context: bpy.types.Context | None = None) -> AAT_Preferences:
    ctx = context or bpy.context
    return ctx.preferences.addons[__package__].preferences


def job_params(settings: AAT_JobSettings) -> dict:
    """The settings as plain Python for the worker thread."""
    return {
        "scale": round(float(settings.scale), 3),
        "strength": round(float(settings.strength), 3),
        "prompt": settings.prompt,
        "seam_fix": settings.seam_fix,
        "loras": [(item.name, round(float(item.weight), 3))
                  for item in settings.loras if item.enabled],
    }


CLASSES = (AAT_Preferences, AAT_LoraItem, AAT_JobSettings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.aat_settings = PointerProperty(type=AAT_JobSettings)


def unregister() -> None:
    del bpy.types.Scene.aat_settings
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
