"""Fixtures for the plugin tests: the real service (`aat up`) on a free loopback port, with no
GPU backend or with RunPod emulated on loopback (LoRAs, slow jobs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_service import TOKEN, Server
from proc_helpers import ServiceProcess, aat_service

ROOT = Path(__file__).resolve().parents[2]
AAT_SCRIPT = Path(sys.executable).parent / "aat"  # the installed console script


def start_aat(work: Path, **extra_env: str) -> tuple[ServiceProcess, Server]:
    """`aat up` as a user starts it (the installed script), with its own data dir, token and
    port; returns once it answers."""
    env = {"AAT_DATA_DIR": str(work / "data"), "AAT_API_TOKEN": TOKEN,
           "AAT_CONFIG": str(work / "none.toml"), **extra_env}
    svc = aat_service("up", "--log-level", "warning", command=[AAT_SCRIPT], env=env, cwd=work,
                      log=work / "server.log", stop_timeout=15).start()
    return svc, Server(svc.url, TOKEN, work / "data")


@pytest.fixture(scope="module")
def aat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`aat up` without a GPU backend (the base upscaler runs on the CPU)."""
    svc, server = start_aat(tmp_path_factory.mktemp("aat"))
    yield server
    svc.stop()


@pytest.fixture
def aat_server_emulated(runpod_emulator: Callable[..., Any],
                        tmp_path_factory: pytest.TempPathFactory,
                        ) -> Iterator[Callable[..., Server]]:
    """``aat_server_emulated(latency_s=...)``: `aat up` whose RunPod endpoints are the emulator
    on loopback (echo worker: LoRA list/upload, tiles refined after ``latency_s``)."""
    services: list[ServiceProcess] = []

    def make(latency_s: float = 0.0) -> Server:
        emulator = runpod_emulator(workers=2, latency_s=latency_s)
        svc, server = start_aat(
            tmp_path_factory.mktemp("aat-gpu"), AAT_BACKEND="runpod",
            RUNPOD_API_KEY=emulator.api_key, AAT_RUNPOD_BASE_URL=emulator.url,
            RUNPOD_UPSCALE_ENDPOINT_ID="upscale", RUNPOD_CAPTION_ENDPOINT_ID="caption",
            AAT_RUNPOD_POLL_MIN_S="0.02", AAT_RUNPOD_POLL_MAX_S="0.2")
        services.append(svc)
        return server

    yield make
    for svc in services:
        svc.stop()


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
