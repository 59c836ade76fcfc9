"""Runs one Blender scenario in a fresh process (bpy can be imported once per process).

    python bpy_driver.py <scenario> <config.json>

Installs the built extension zip like a user does (``package_install_files``), runs the
scenario, disables the add-on, and prints ``RESULT <json>`` with what a user would see: task
states, panel lines, image sizes/pixels/paths, and whether a timer or a thread survived.
Timers never fire in background mode, so the scenario drives ``pump()`` by hand.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import bpy

PKG = "bl_ext.user_default.ai_assets_toolbox"


def install(cfg: dict[str, Any]) -> dict[str, Any]:
    result = bpy.ops.extensions.package_install_files(
        filepath=cfg["zip"], repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url = cfg["url"]
    prefs.api_token = cfg["token"]
    prefs.result_mode = cfg.get("mode", "REPLACE")
    return {"install": sorted(result),
            "token_subtype": prefs.bl_rna.properties["api_token"].subtype}


def mod(name: str) -> Any:
    return sys.modules[f"{PKG}.{name}"]


HISTORY: dict[str, list[str]] = {}  # every status each task showed, in order


def drive(limit_s: float = 60.0) -> None:
    """Call the add-on's pump until no task is running (what the timer does in a UI session)."""
    pump = mod("pump")
    deadline = time.monotonic() + limit_s
    while True:
        pump.pump()
        for task in pump.tasks:
            seen = HISTORY.setdefault(task.label, [])
            if not seen or seen[-1] != task.status:
                seen.append(task.status)
        if not pump.busy() or time.monotonic() > deadline:
            break
        time.sleep(0.05)


def describe(img: bpy.types.Image) -> dict[str, Any]:
    return {"name": img.name, "size": list(img.size), "filepath": bpy.path.abspath(img.filepath),
            "dirty": img.is_dirty, "source": img.source, "packed": img.packed_file is not None,
            "pixels": [round(v, 4) for v in img.pixels[:]]}


class OperatorProps:
    """What ``layout.operator()`` returns: setting a property the operator lacks fails; the
    values set are appended to the drawn entry as ``name=value``."""

    def __init__(self, rna: Any, entry: list[str]) -> None:
        object.__setattr__(self, "_rna", rna)
        object.__setattr__(self, "_entry", entry)

    def __setattr__(self, name: str, value: Any) -> None:
        assert name in self._rna.properties, f"operator has no property {name}"
        self._entry.append(f"{name}={value}")


class RecordingLayout:
    """Stands in for ``bpy.types.UILayout``, which cannot be created without a window: records
    what the panel's real ``draw()`` puts on screen and fails on any property, operator or icon
    name that does not exist."""

    ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())

    def __init__(self, drawn: list[list[str]]) -> None:
        self.drawn = drawn

    def column(self, **_kw: Any) -> RecordingLayout:
        return self

    row = box = column

    def _icon(self, icon: str) -> str:
        assert icon in self.ICONS, f"unknown icon {icon}"
        return icon

    def prop(self, data: Any, name: str, text: str | None = None, **kw: Any) -> None:
        assert name in data.bl_rna.properties, f"no property {name} on {data}"
        self.drawn.append(["prop", name, text or ""])

    def operator(self, idname: str, text: str | None = None, icon: str = "NONE") -> Any:
        group, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, group), name).get_rna_type()  # raises if it is unknown
        entry = ["operator", idname, self._icon(icon)]
        self.drawn.append(entry)
        return OperatorProps(rna, entry)

    def label(self, text: str = "", icon: str = "NONE") -> None:
        self.drawn.append(["label", text, self._icon(icon)])

    def progress(self, factor: float = 0.0, text: str = "") -> None:
        self.drawn.append(["progress", text, f"{factor:.2f}"])


def draw_panel() -> list[list[str]]:
    """Run the Image Editor panel's draw() on the current state."""
    panel_cls = mod("ui").AAT_PT_upscale
    drawn: list[list[str]] = []
    fake = type("PanelSelf", (), {"layout": RecordingLayout(drawn),
                                  "_draw_loras": staticmethod(panel_cls._draw_loras),
                                  "_draw_tasks": staticmethod(panel_cls._draw_tasks)})()
    panel_cls.draw(fake, bpy.context)
    return drawn


def state() -> dict[str, Any]:
    pump = mod("pump")
    return {
        "tasks": [{"label": t.label, "state": t.state, "status": t.status, "job_id": t.job_id,
                   "page_url": t.page_url, "result_path": t.result_path, "result_image": t.result_image}
                  for t in pump.tasks],
        "panel": [text for _icon, text in mod("ui").panel_lines(bpy.context)],
        "history": HISTORY,
        "drawn": draw_panel(),
    }


def load_png(path: str, name: str) -> bpy.types.Image:
    img = bpy.data.images.load(path)
    img.name = name
    return img


def scenario_generated(cfg: dict[str, Any]) -> dict[str, Any]:
    img = bpy.data.images.new("tex", 8, 8, alpha=True)
    img.generated_color = (1.0, 0.0, 0.0, 1.0)
    bpy.context.scene.aat_settings.prompt = "red brick, wet"
    op = bpy.ops.aat.submit_image(image_name="tex")
    timer_while_running = bpy.app.timers.is_registered(mod("pump").tick)
    drive()
    return {"op": sorted(op), "timer_while_running": timer_while_running,
            "image": describe(img), **state()}


def scenario_dirty_new(cfg: dict[str, Any]) -> dict[str, Any]:
    img = load_png(cfg["png"], "rock")
    pixels = list(img.pixels[:])
    pixels[0:4] = [0.0, 1.0, 0.0, 1.0]  # an unsaved paint stroke
    img.pixels[:] = pixels
    img.update()
    dirty_before = img.is_dirty
    with bpy.context.temp_override(edit_image=img):
        op = bpy.ops.aat.submit_image()
    drive()
    new = bpy.data.images.get(mod("pump").tasks[0].result_image)
    return {"op": sorted(op), "dirty_before": dirty_before, "original": describe(img),
            "new": describe(new) if new else None, **state()}


def scenario_packed(cfg: dict[str, Any]) -> dict[str, Any]:
    img = load_png(cfg["png"], "decal")
    img.pack()
    op = bpy.ops.aat.submit_image(image_name="decal")
    drive()
    return {"op": sorted(op), "image": describe(img), **state()}


def scenario_material(cfg: dict[str, Any]) -> dict[str, Any]:
    mat = bpy.data.materials.new("Rock")
    other = bpy.data.materials.new("RockCopy")
    if bpy.app.version < (5, 0, 0):  # 5.0 gives every material nodes and deprecates the flag
        mat.use_nodes = True
        other.use_nodes = True
    names = []
    for index, path in enumerate(cfg["pngs"]):
        img = load_png(path, f"layer{index}")
        names.append(img.name)
        for m in (mat, other) if index == 0 else (mat,):
            node = m.node_tree.nodes.new("ShaderNodeTexImage")
            node.image = img
    op = bpy.ops.aat.submit_material(material_name="Rock")
    drive()
    used_by_other = [n.image.name for n in other.node_tree.nodes if n.type == "TEX_IMAGE"]
    return {"op": sorted(op), "images": [describe(bpy.data.images[n]) for n in names],
            "other_material_images": used_by_other,
            "other_material_size": list(bpy.data.images[used_by_other[0]].size), **state()}


def scenario_failure(cfg: dict[str, Any]) -> dict[str, Any]:
    img = bpy.data.images.new("tex", 4, 4)
    op = bpy.ops.aat.submit_image(image_name="tex")
    drive()
    return {"op": sorted(op), "image": describe(img), **state()}


def scenario_refused(cfg: dict[str, Any]) -> dict[str, Any]:
    bpy.data.images.new("tex", 4, 4)
    try:
        op = sorted(bpy.ops.aat.submit_image(image_name="tex"))
    except RuntimeError as err:  # an operator returning CANCELLED with an ERROR report
        op = [f"RuntimeError: {err}"]
    threads = [t.name for t in threading.enumerate() if t.name.startswith("aat-")]
    return {"op": op, "threads": threads, **state()}


def scenario_cancel(cfg: dict[str, Any]) -> dict[str, Any]:
    # named as a texture: a blank 8x8 would pass for pixel art, which never waits for a GPU
    img = bpy.data.images.new("tex_albedo", 8, 8)
    bpy.ops.aat.submit_image(image_name="tex_albedo")
    op = bpy.ops.aat.cancel(image_name="tex_albedo")
    drive()
    return {"op": sorted(op), "image": describe(img), **state()}


def scenario_loras(cfg: dict[str, Any]) -> dict[str, Any]:
    refresh = bpy.ops.aat.refresh_models()
    drive()
    settings = bpy.context.scene.aat_settings
    listed = [item.name for item in settings.loras]
    for item in settings.loras:
        item.enabled, item.weight = True, 0.8
    img = bpy.data.images.new("tex", 8, 8)
    op = bpy.ops.aat.submit_image(image_name="tex")
    drive()
    return {"refresh": sorted(refresh), "op": sorted(op), "listed": listed,
            "image": describe(img), **state()}


def scenario_file_load(cfg: dict[str, Any]) -> dict[str, Any]:
    bpy.data.images.new("tex", 8, 8)
    op = bpy.ops.aat.submit_image(image_name="tex")
    bpy.ops.wm.read_homefile(use_empty=True)  # the user opens another file
    other = bpy.data.images.new("tex", 4, 4)  # whose image happens to have the same name
    timer_kept = bpy.app.timers.is_registered(mod("pump").tick)
    drive()
    time.sleep(1.0)  # the runner notices the cancel and stops
    mod("pump").pump()
    return {"op": sorted(op), "timer_kept": timer_kept, "image": describe(other), **state()}


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items()
             if name.startswith("scenario_")}


def main() -> None:
    name, cfg_path = sys.argv[1], sys.argv[2]
    with open(cfg_path) as fh:
        cfg = json.load(fh)
    out = install(cfg)
    out["bpy_version"] = bpy.app.version_string
    if cfg.get("online_access"):
        bpy.context.preferences.system.use_online_access = True
    out.update(SCENARIOS[name](cfg))
    pump = mod("pump")
    bpy.ops.preferences.addon_disable(module=PKG)
    time.sleep(0.1)
    out["timer_after_disable"] = bpy.app.timers.is_registered(pump.tick)
    out["threads_after_disable"] = [t.name for t in threading.enumerate()
                                    if t.name.startswith("aat-") and t.is_alive()]
    print("RESULT " + json.dumps(out))  # noqa: T201 - the test reads this line


if __name__ == "__main__":
    main()
