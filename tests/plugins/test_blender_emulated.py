"""The Blender extension against `aat up` whose GPU backend is RunPod emulated on loopback:
LoRAs listed from the server and sent with the job; canceling a job that is really running."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from blender_scenario import safetensors_bytes, scenario
from plugin_service import Server

pytestmark = pytest.mark.slow  # real bpy (Blender as a module) in subprocesses


def test_loras_are_listed_from_the_server_and_sent_with_the_job(
        aat_server_emulated: Callable[..., Server], extension_zip: Path, tmp_path: Path) -> None:
    server = aat_server_emulated(latency_s=1.0)  # a job long enough to show progress
    server.call("POST", "/v1/models?filename=moss.safetensors", safetensors_bytes())
    out = scenario("loras", tmp_path, zip=str(extension_zip), url=server.url,
                   token=server.token)
    assert out["refresh"] == ["FINISHED"] and out["listed"] == ["moss.safetensors"]
    assert ["prop", "enabled", "moss.safetensors"] in out["drawn"]  # a tick box in the panel
    assert out["tasks"][0]["status"] == "1 LoRA(s) on the server"
    job_task = out["tasks"][1]
    assert job_task["state"] == "done", job_task
    job = server.get_json(f"/v1/jobs/{job_task['job_id']}")
    assert job["params"]["loras"] == [{"name": "moss.safetensors", "weight": 0.8}]
    assert out["image"]["size"] == [16, 16]
    shown = out["history"]["tex"]  # what the panel showed while the job ran
    assert shown[-1] == "Done: tex_x2.png"
    assert any(re.fullmatch(r"\w+ \d+%", line) for line in shown[:-1]), shown


def test_cancel_stops_a_running_job_and_leaves_the_image(
        aat_server_emulated: Callable[..., Server], extension_zip: Path, tmp_path: Path) -> None:
    server = aat_server_emulated(latency_s=5.0)
    out = scenario("cancel", tmp_path, zip=str(extension_zip), url=server.url,
                   token=server.token)
    assert out["op"] == ["FINISHED"]
    [task] = out["tasks"]
    assert task["state"] == "canceled" and task["result_path"] == ""
    assert out["image"]["size"] == [8, 8] and out["image"]["source"] == "GENERATED"
    assert any("tex_albedo: Canceled" in line for line in out["panel"]), out["panel"]
    assert "Canceling..." in out["history"]["tex_albedo"]
    # the add-on stops at the server's 202; the runner ends the job moments later
    deadline = time.monotonic() + 20
    while (status := server.get_json(f"/v1/jobs/{task['job_id']}")["status"]) == "running" \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == "canceled"
