"""The Image Editor sidebar tab ("AI Toolbox"): job settings, buttons, and the job list.

:func:`panel_lines` computes the status text the panel shows, so what a user reads (progress,
errors, the online-access notice) is plain data that tests can check without a window.
"""

from __future__ import annotations

import bpy

from . import client, prefs, pump

ICONS = {"running": "SORTTIME", "done": "CHECKMARK", "error": "ERROR", "canceled": "CANCEL"}


def panel_lines(context: bpy.types.Context) -> list[tuple[str, str]]:
    """``(icon, text)`` rows: a notice about the server URL, then one row per task."""
    rows: list[tuple[str, str]] = []
    try:
        client.check_server_url(prefs.preferences(context).server_url,
                                bool(bpy.app.online_access))
    except client.ClientError as err:
        rows.append(("ERROR", err.message))
    for task in pump.tasks:
        rows.append((ICONS.get(task.state, "DOT"), f"{task.label}: {task.status}"))
    return rows


class AAT_PT_upscale(bpy.types.Panel):
    bl_label = "AI Assets Toolbox"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "AI Toolbox"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.aat_settings
        col = layout.column(align=True)
        col.prop(settings, "scale")
        col.prop(settings, "strength")
        col.prop(settings, "prompt")
        col.prop(settings, "seam_fix")
        self._draw_loras(layout, settings)
        row = layout.row(align=True)
        row.operator("aat.submit_image", icon="IMAGE_DATA")
        row.operator("aat.cancel", icon="CANCEL")
        layout.operator("aat.submit_material", icon="MATERIAL")
        self._draw_tasks(layout, context)

    @staticmethod
    def _draw_loras(layout: bpy.types.UILayout, settings: prefs.AAT_JobSettings) -> None:
        box = layout.box()
        head = box.row()
        head.label(text="LoRAs")
        head.operator("aat.refresh_models", text="", icon="FILE_REFRESH")
        for item in settings.loras:
            row = box.row(align=True)
            row.prop(item, "enabled", text=item.name)
            row.prop(item, "weight", text="")

    @staticmethod
    def _draw_tasks(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
        rows = panel_lines(context)
        if not rows:
            return
        box = layout.box()
        split = len(rows) - len(pump.tasks)
        for icon, text in rows[:split]:
            box.label(text=text, icon=icon)
        for (icon, text), task in zip(rows[split:], pump.tasks, strict=True):
            if task.active and hasattr(box, "progress"):
                box.progress(factor=task.progress, text=text)
            else:
                box.label(text=text, icon=icon)
            if task.page_url:  # the job's page in the studio (tile grid, captions, compare)
                box.operator("wm.url_open", text="Open in studio", icon="URL").url = task.page_url
        box.operator("aat.clear_finished", icon="TRASH")


CLASSES = (AAT_PT_upscale,)
