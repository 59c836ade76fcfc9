"""The Blender extension's failure paths, each shown in the panel: bad token, server down, a
remote server without Blender's online access, a LoRA list the server cannot give, and jobs
of a .blend that was closed (real bpy, real `aat up`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from blender_scenario import scenario
from plugin_service import Server
from proc_helpers import free_port

pytestmark = pytest.mark.slow  # real bpy (Blender as a module) in subprocesses


def test_bad_token_is_shown_in_the_panel(aat_server: Server, extension_zip: Path,
                                         tmp_path: Path) -> None:
    out = scenario("failure", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token="wrong-token")
    [task] = out["tasks"]
    assert task["state"] == "error"
    assert any("rejected the API token (401)" in line for line in out["panel"]), out["panel"]
    labels = [(text, icon) for kind, text, icon in out["drawn"] if kind == "label"]
    assert any("rejected the API token" in text and icon == "ERROR" for text, icon in labels)
    assert out["image"]["size"] == [4, 4] and out["image"]["source"] == "GENERATED"


def test_opening_another_file_cancels_its_jobs(aat_server: Server, extension_zip: Path,
                                               tmp_path: Path) -> None:
    out = scenario("file_load", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token)
    assert out["op"] == ["FINISHED"] and out["timer_kept"] is True
    [task] = out["tasks"]
    assert task["state"] == "canceled" and task["status"] == "Canceled: the file was closed"
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


def test_lora_list_error_is_shown_in_the_panel(aat_server: Server, extension_zip: Path,
                                               tmp_path: Path) -> None:
    out = scenario("loras", tmp_path, zip=str(extension_zip), url=aat_server.url,
                   token=aat_server.token)
    assert out["listed"] == []
    assert out["tasks"][0]["state"] == "error"
    assert any("LoRA list: Error: Server error 503" in line for line in out["panel"])
