"""The Blender extension, for real: built with the wheel's extension CLI, installed with
``package_install_files`` into an isolated Blender user dir, driven in the real ``bpy`` module
(one fresh process per scenario) against the real service started with ``aat up``."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from plugin_service import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "plugins/blender/ai_assets_toolbox"
DRIVER = Path(__file__).with_name("bpy_driver.py")


@pytest.fixture(scope="module")
def ext_cli() -> Path:
    spec = importlib.util.find_spec("bpy")  # locates the wheel without importing bpy here
    assert spec is not None and spec.origin, "the bpy wheel is installed"
    found = sorted(Path(spec.origin).parent.glob(
        "*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, "the bpy wheel ships blender_ext.py"
    return found[-1]


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built with the documented command (validate + build with Blender's extension CLI)."""
    out_dir = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, ROOT / "scripts/build_blender_extension.py",
                          "--output-dir", out_dir], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    zip_path = out_dir / "ai_assets_toolbox-0.1.0.zip"
    assert run.stdout.strip().endswith(str(zip_path))
    return zip_path


def scenario(name: str, tmp_path: Path, **cfg: Any) -> dict[str, Any]:
    """Run one bpy_driver scenario in a fresh process with an isolated Blender user dir."""
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    # the timeout doubles as the check that nothing (e.g. a left-over timer) hangs the exit
    run = subprocess.run([sys.executable, DRIVER, name, cfg_path], capture_output=True,
                         text=True, timeout=120, env=env, cwd=tmp_path)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["install"] == ["FINISHED"]
    assert result["timer_after_disable"] is False, "disabling must remove the timer"
    assert result["threads_after_disable"] == [], "disabling must stop the threads"
    return result


def png(path: Path, colour: tuple[int, int, int, int], size: int = 8) -> Path:
    Image.new("RGBA", (size, size), colour).save(path)
    return path


def blender_rows(path: str) -> list[float]:
    """The file's pixels as Blender lists them: RGBA floats, bottom row first."""
    img = Image.open(path).convert("RGBA").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return [v / 255 for v in img.tobytes()]


def test_extension_validates_builds_and_declares_network(ext_cli: Path, extension_zip: Path,
                                                         tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, ext_cli, "validate", SOURCE], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
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
        aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    out = scenario("generated", tmp_path, zip=str(extension_zip), url=aat_server.url,
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


def test_unsaved_paint_edits_are_uploaded_and_kept_when_loading_as_new_image(
        aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    source = png(tmp_path / "rock.png", (0, 0, 255, 255))
    out = scenario("dirty_new", tmp_path, zip=str(extension_zip), url=aat_server.url,
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


def test_packed_image_stays_packed_with_the_result(aat_server: Server, extension_zip: Path,
                                                  tmp_path: Path) -> None:
    source = png(tmp_path / "decal.png", (255, 255, 0, 255))
    out = scenario("packed", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token, png=str(source))
    [task] = out["tasks"]
    assert task["state"] == "done", task
    assert out["image"]["packed"] is True and out["image"]["size"] == [16, 16]
    assert out["image"]["pixels"] == pytest.approx(blender_rows(task["result_path"]),
                                                   abs=1.5 / 255)
    assert task["result_path"].endswith("decal_x2.png")


def test_every_image_of_the_material_is_upscaled_and_other_materials_follow(
        aat_server: Server, extension_zip: Path, tmp_path: Path) -> None:
    paths = [png(tmp_path / "albedo.png", (200, 50, 50, 255)),
             png(tmp_path / "normal.png", (128, 128, 255, 255))]
    before = [p.read_bytes() for p in paths]
    out = scenario("material", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token, pngs=[str(p) for p in paths])
    assert out["op"] == ["FINISHED"]
    assert [t["state"] for t in out["tasks"]] == ["done", "done"], out["tasks"]
    assert [img["size"] for img in out["images"]] == [[16, 16], [16, 16]]
    assert [Path(img["filepath"]).name for img in out["images"]] == ["albedo_x2.png",
                                                                     "normal_x2.png"]
    assert out["other_material_images"] == ["layer0"] and out["other_material_size"] == [16, 16]
    assert [p.read_bytes() for p in paths] == before  # the source files are untouched


def test_bad_token_is_shown_in_the_panel(aat_server: Server, extension_zip: Path,
                                         tmp_path: Path) -> None:
    out = scenario("failure", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token="wrong-token")
    [task] = out["tasks"]
    assert task["state"] == "error"
    assert any("rejected the API token (401)" in line for line in out["panel"]), out["panel"]
    assert out["image"]["size"] == [4, 4] and out["image"]["source"] == "GENERATED"


def test_server_down_is_shown_in_the_panel(extension_zip: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = scenario("failure", tmp_path, zip=str(extension_zip), url=url, token="x")
    assert [t["state"] for t in out["tasks"]] == ["error"]
    assert any(f"Cannot reach the server at {url}" in line and "aat up" in line
               for line in out["panel"]), out["panel"]


def test_remote_server_needs_blender_online_access(extension_zip: Path,
                                                   tmp_path: Path) -> None:
    out = scenario("refused", tmp_path, zip=str(extension_zip),
                   url="http://192.0.2.10:8765", token="x")
    assert out["threads"] == [], "no request may leave Blender"
    assert "Allow Online Access" in out["op"][0]
    assert any("online access is off" in line for line in out["panel"]), out["panel"]


def test_cancel_stops_the_job_and_leaves_the_image(aat_server: Server, extension_zip: Path,
                                                   tmp_path: Path) -> None:
    out = scenario("cancel", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token)
    assert out["op"] == ["FINISHED"]
    [task] = out["tasks"]
    assert task["state"] == "canceled" and task["result_path"] == ""
    assert out["image"]["size"] == [8, 8] and out["image"]["source"] == "GENERATED"
    assert any("Cancel" in line for line in out["panel"])
    job = aat_server.get_json(f"/v1/jobs/{task['job_id']}")
    assert job["status"] in ("canceled", "succeeded")  # a tiny job may finish first
