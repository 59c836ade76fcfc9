"""The Blender extension, for real: built with the wheel's extension CLI, installed with
``package_install_files`` into an isolated Blender user dir, driven in the real ``bpy`` module
(one fresh process per scenario) against the real service started with ``aat up``."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from blender_scenario import BPY_PYTHONS, blender_rows, png, scenario
from PIL import Image
from plugin_service import Server

pytestmark = pytest.mark.slow  # real bpy (Blender as a module) in subprocesses

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "plugins/blender/ai_assets_toolbox"


@pytest.fixture(params=sorted(BPY_PYTHONS))
def bpy(request: pytest.FixtureRequest) -> str:
    """The add-on scenarios run on the oldest, the suite's and the newest supported Blender."""
    return str(request.param)


def test_extension_validates_builds_and_declares_network(ext_cli: Path, extension_zip: Path,
                                                         tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, ext_cli, "validate", SOURCE], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    built = subprocess.run([sys.executable, ext_cli, "validate", extension_zip],
                           capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stdout + built.stderr  # the zip users install validates
    names = zipfile.ZipFile(extension_zip).namelist()
    assert {"blender_manifest.toml", "__init__.py", "client.py", "pump.py", "ops.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n]
    manifest = zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode()
    assert "[permissions]" in manifest and "network =" in manifest
    broken = tmp_path / "broken"
    shutil.copytree(SOURCE, broken)
    text = (broken / "blender_manifest.toml").read_text()
    (broken / "blender_manifest.toml").write_text(text.replace('type = "add-on"', ""))
    bad = subprocess.run([sys.executable, ext_cli, "validate", broken], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "type" in bad.stdout + bad.stderr


def test_generated_image_is_replaced_in_place_with_the_result(
        bpy: str, aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    out = scenario("generated", tmp_path, bpy=bpy, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token)
    assert out["token_subtype"] == "PASSWORD"
    assert out["op"] == ["FINISHED"] and out["timer_while_running"] is True
    [task] = out["tasks"]
    assert task["state"] == "done", task
    image = out["image"]
    assert image["size"] == [16, 16] and image["source"] == "FILE"
    assert image["filepath"] == task["result_path"] and Path(task["result_path"]).is_file()
    assert "extensions" in task["result_path"] and task["result_path"].endswith("tex_x2.png")
    assert image["pixels"] == pytest.approx(blender_rows(task["result_path"]), abs=1.5 / 255)
    assert image["pixels"][:3] == pytest.approx([1.0, 0.0, 0.0], abs=0.1)  # still red
    job = aat_server.get_json(f"/v1/jobs/{task['job_id']}")
    assert job["status"] == "succeeded" and job["params"]["prompt"] == "red brick, wet"
    assert job["params"]["scale"] == 2.0 and job["input"]["width"] == 8
    assert any("tex: Done: tex_x2.png" in line for line in out["panel"])
    assert out["history"]["tex"][-1] == "Done: tex_x2.png"
    drawn = out["drawn"]  # what the sidebar tab draws (draw() run on a recording layout)
    assert [d[1] for d in drawn if d[0] == "prop"] == ["scale", "strength", "prompt", "seam_fix"]
    assert {d[1] for d in drawn if d[0] == "operator"} >= {"aat.submit_image", "aat.cancel",
                                                          "aat.submit_material"}
    assert ["label", "tex: Done: tex_x2.png", "CHECKMARK"] in drawn
    page = f"{aat_server.url}/jobs/{task['job_id']}"
    assert task["page_url"] == page, "the job's studio page is known to the panel"
    assert ["operator", "wm.url_open", "URL", f"url={page}"] in drawn


def test_unsaved_paint_edits_are_uploaded_and_kept_when_loading_as_new_image(
        bpy: str, aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    source = png(tmp_path / "rock.png", (0, 0, 255, 255))
    out = scenario("dirty_new", tmp_path, bpy=bpy, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token, mode="NEW", png=str(source))
    assert out["op"] == ["FINISHED"] and out["dirty_before"] is True
    [task] = out["tasks"]
    assert task["state"] == "done", task
    original = out["original"]
    assert original["dirty"] is True and original["size"] == [8, 8]
    assert original["pixels"][:4] == [0.0, 1.0, 0.0, 1.0]  # the paint stroke survived
    assert original["filepath"] == str(source)
    sibling = tmp_path / "rock_x2.png"
    assert task["result_path"] == str(sibling) and sibling.is_file()
    assert out["new"]["size"] == [16, 16] and out["new"]["filepath"] == str(sibling)
    assert not list(tmp_path.glob("*.part"))
    job = aat_server.get_json(f"/v1/jobs/{task['job_id']}")
    assert job["input"]["sha256"] != hashlib.sha256(source.read_bytes()).hexdigest()
    assert Image.open(io.BytesIO(sibling.read_bytes())).size == (16, 16)


def test_packed_image_stays_packed_with_the_result(bpy: str, aat_server: Server, extension_zip: Path,
                                                  tmp_path: Path) -> None:
    source = png(tmp_path / "decal.png", (255, 255, 0, 255))
    out = scenario("packed", tmp_path, bpy=bpy, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token, png=str(source))
    [task] = out["tasks"]
    assert task["state"] == "done", task
    assert out["image"]["packed"] is True and out["image"]["size"] == [16, 16]
    assert out["image"]["pixels"] == pytest.approx(blender_rows(task["result_path"]),
                                                   abs=1.5 / 255)
    assert task["result_path"].endswith("decal_x2.png")


def test_every_image_of_the_material_is_upscaled_and_other_materials_follow(
        bpy: str, aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    paths = [png(tmp_path / "albedo.png", (200, 50, 50, 255)),
             png(tmp_path / "normal.png", (128, 128, 255, 255))]
    before = [p.read_bytes() for p in paths]
    out = scenario("material", tmp_path, bpy=bpy, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token, pngs=[str(p) for p in paths])
    assert out["op"] == ["FINISHED"]
    assert [t["state"] for t in out["tasks"]] == ["done", "done"], out["tasks"]
    assert [img["size"] for img in out["images"]] == [[16, 16], [16, 16]]
    assert [Path(img["filepath"]).name for img in out["images"]] == ["albedo_x2.png",
                                                                     "normal_x2.png"]
    assert out["other_material_images"] == ["layer0"] and out["other_material_size"] == [16, 16]
    assert [p.read_bytes() for p in paths] == before  # the source files are untouched
