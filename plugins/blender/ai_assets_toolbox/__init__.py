"""AI Assets Toolbox for Blender: upscale textures with the AI Assets Toolbox REST service.

Modules: ``client`` (HTTP and worker threads, no bpy), ``pump`` (main-thread task list and the
one timer), ``prefs`` (preferences and job settings), ``ops`` (operators), ``ui`` (the Image
Editor sidebar tab). ``unregister()`` removes the timer and stops every thread.
"""

from __future__ import annotations

import bpy

from . import ops, prefs, pump, ui


def register() -> None:
    prefs.register()
    for cls in ops.CLASSES + ui.CLASSES:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_pre.append(pump.on_load_pre)


def unregister() -> None:
    if pump.on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(pump.on_load_pre)
    pump.shutdown()
    for cls in reversed(ops.CLASSES + ui.CLASSES):
        bpy.utils.unregister_class(cls)
    prefs.unregister()
