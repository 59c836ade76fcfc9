"""Operators: submit the active image or every image of a material, cancel, refresh LoRAs.

Everything that needs ``bpy`` happens here in ``execute()`` on the main thread: reading the
preferences, staging unsaved/generated/packed images to a temp PNG (through a throw-away copy,
so the original datablock keeps its unsaved paint edits), choosing the result path. The worker
thread only receives plain strings.
"""

from __future__ import annotations

import array
import contextlib
import os
import re
import tempfile

import bpy
from bpy.props import StringProperty

from . import client, prefs, pump

FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tga": "tga"}


def _safe(name: str) -> str:
    stem = os.path.splitext(name)[0] if os.path.splitext(name)[1].lower() in FORMATS else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def resolve_image(context: bpy.types.Context, name: str) -> bpy.types.Image | None:
    """The image named ``name``, else the Image Editor's image."""
    if name:
        return bpy.data.images.get(name)
    img = getattr(context, "edit_image", None)
    if img is None and getattr(context, "space_data", None) is not None:
        img = getattr(context.space_data, "image", None)
    return img


def _file_path(img: bpy.types.Image) -> str:
    """The image's file on disk if it is a plain, saved, unpacked file; else ''."""
    if img.source != "FILE" or img.packed_file is not None or not img.filepath:
        return ""
    path = bpy.path.abspath(img.filepath, library=img.library)
    return os.path.normpath(path) if os.path.isfile(path) else ""


def _staging_dir() -> str:
    base = bpy.app.tempdir or tempfile.gettempdir()
    path = os.path.join(base, "aat_staging")
    os.makedirs(path, exist_ok=True)
    return path


def stage_pixels(img: bpy.types.Image) -> str:
    """Write the image's current pixels (unsaved edits included) to a temp PNG."""
    width, height = img.size
    if not width or not height:
        raise client.ClientError(f"Image {img.name!r} has no pixels: load or generate it first",
                                 "image_empty")
    channels = img.channels
    buf = array.array("f", bytes(4 * width * height * channels))
    img.pixels.foreach_get(buf)
    if channels != 4:
        rgba = array.array("f", bytes(16 * width * height))
        for c in range(min(channels, 3)):
            rgba[c::4] = buf[c::channels]
        rgba[3::4] = array.array("f", [1.0]) * (width * height)
        buf = rgba
    path = os.path.join(_staging_dir(), f"{_safe(img.name)}.png")
    copy = bpy.data.images.new("__aat_stage__", width, height, alpha=True)
    try:
        with contextlib.suppress(TypeError):
            copy.colorspace_settings.name = img.colorspace_settings.name
        copy.pixels.foreach_set(buf)
        copy.filepath_raw = path
        copy.file_format = "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return path


def _results_dir() -> str:
    try:
        return bpy.utils.extension_path_user(__package__, path="results", create=True)
    except (ValueError, RuntimeError):  # loaded as a legacy add-on
        path = os.path.join(tempfile.gettempdir(), "aat_results")
        os.makedirs(path, exist_ok=True)
        return path


def result_path(img: bpy.types.Image, source_file: str, scale: float) -> str:
    """``<stem>_x<scale><ext>`` beside the source file (or in the add-on's results folder);
    ``_1``, ``_2``... when the name is taken on disk or by a running job."""
    folder = os.path.dirname(source_file) if source_file else ""
    if not folder or not os.access(folder, os.W_OK):
        folder = _results_dir()
    ext = os.path.splitext(source_file)[1].lower() if source_file else ".png"
    ext = ext if ext in FORMATS else ".png"
    stem = f"{_safe(os.path.basename(source_file) if source_file else img.name)}_x{scale:g}"
    taken = pump.pending_destinations()
    candidate, n = os.path.join(folder, stem + ext), 0
    while os.path.exists(candidate) or candidate in taken:
        n += 1
        candidate = os.path.join(folder, f"{stem}_{n}{ext}")
    return candidate


def submit(context: bpy.types.Context, img: bpy.types.Image) -> pump.Task:
    """Stage ``img`` if needed and start a job runner for it."""
    pref = prefs.preferences(context)
    url = client.check_server_url(pref.server_url, bool(bpy.app.online_access))
    if any(t.active and t.image_name == img.name for t in pump.tasks):
        raise client.ClientError(f"{img.name} is already being upscaled", "busy")
    settings = context.scene.aat_settings
    params = prefs.job_params(settings)
    source = _file_path(img)
    staged = [stage_pixels(img)] if img.is_dirty or not source else []
    upload = staged[0] if staged else source
    dest = result_path(img, source, settings.scale)
    params["output_format"] = FORMATS[os.path.splitext(dest)[1]]
    runner = client.JobRunner(client.JobClient(url, pref.api_token), upload,
                              os.path.basename(upload), params, dest)
    task = pump.Task(label=img.name, runner=runner, image_name=img.name,
                     mode=pref.result_mode, staged=staged)
    return pump.start(task)


def _fail(op: bpy.types.Operator, label: str, message: str) -> set[str]:
    pump.fail(label, message)
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


class AAT_OT_submit_image(bpy.types.Operator):
    """Upscale the active image with the AI Assets Toolbox server"""

    bl_idname = "aat.submit_image"
    bl_label = "Upscale Image"
    image_name: StringProperty(name="Image", default="")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[str]:
        img = resolve_image(context, self.image_name)
        if img is None:
            return _fail(self, self.image_name or "Upscale",
                         "No image: open one in the Image Editor or pass image_name")
        try:
            submit(context, img)
        except client.ClientError as err:
            return _fail(self, img.name, err.message)
        self.report({"INFO"}, f"Submitted {img.name}")
        return {"FINISHED"}


def material_images(mat: bpy.types.Material) -> list[bpy.types.Image]:
    # Only the node tree is read: `Material.use_nodes` is deprecated in Blender 5.0 (every
    # material has nodes there) and goes away in 6.0.
    if mat is None or mat.node_tree is None:
        return []
    found: list[bpy.types.Image] = []
    for node in mat.node_tree.nodes:
        if node.type == "TEX_IMAGE" and node.image is not None and node.image not in found:
            found.append(node.image)
    return found


class AAT_OT_submit_material(bpy.types.Operator):
    """Upscale every image used by the selected material"""

    bl_idname = "aat.submit_material"
    bl_label = "Upscale Material Images"
    material_name: StringProperty(name="Material", default="")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[str]:
        mat = bpy.data.materials.get(self.material_name) if self.material_name else None
        obj = getattr(context, "object", None)
        if mat is None and obj is not None:
            mat = obj.active_material
        images = material_images(mat)
        if not images:
            return _fail(self, "Material", "No image textures: select an object whose active "
                                           "material has Image Texture nodes")
        started = 0
        for img in images:
            try:
                submit(context, img)
                started += 1
            except client.ClientError as err:
                pump.fail(img.name, err.message)
        self.report({"INFO"}, f"Submitted {started} of {len(images)} images of {mat.name}")
        return {"FINISHED"} if started else {"CANCELLED"}


class AAT_OT_cancel(bpy.types.Operator):
    """Cancel the running upscale jobs (of one image, or all)"""

    bl_idname = "aat.cancel"
    bl_label = "Cancel"
    image_name: StringProperty(name="Image", default="")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[str]:
        count = pump.cancel(self.image_name)
        self.report({"INFO"}, f"Canceling {count} job(s)")
        return {"FINISHED"}


class AAT_OT_refresh_models(bpy.types.Operator):
    """List the LoRAs available on the server"""

    bl_idname = "aat.refresh_models"
    bl_label = "Refresh LoRAs"

    def execute(self, context: bpy.types.Context) -> set[str]:
        pref = prefs.preferences(context)
        try:
            url = client.check_server_url(pref.server_url, bool(bpy.app.online_access))
        except client.ClientError as err:
            return _fail(self, "LoRA list", err.message)
        pump.start(pump.new_fetch(url, pref.api_token))
        return {"FINISHED"}


class AAT_OT_clear_finished(bpy.types.Operator):
    """Remove finished, failed and canceled jobs from the list"""

    bl_idname = "aat.clear_finished"
    bl_label = "Clear Finished"

    def execute(self, context: bpy.types.Context) -> set[str]:
        pump.clear_finished()
        return {"FINISHED"}


CLASSES = (AAT_OT_submit_image, AAT_OT_submit_material, AAT_OT_cancel,
           AAT_OT_refresh_models, AAT_OT_clear_finished)
