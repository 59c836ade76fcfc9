"""Helpers of the Blender tests: run one ``bpy_driver`` scenario in a fresh process, and
build the files the scenarios use."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

DRIVER = Path(__file__).with_name("bpy_driver.py")
ROOT = Path(__file__).resolve().parents[2]

# The oldest and newest supported Blender, beside the suite's own bpy (4.5, in .venv):
# `scripts/test` installs each into its own interpreter under .venv-bpy/ (bpy can be imported
# once per process and one interpreter holds one bpy).
BPY_PYTHONS = {"4.2": ROOT / ".venv-bpy/4.2/bin/python", "4.5": Path(sys.executable),
               "5.0": ROOT / ".venv-bpy/5.0/bin/python"}


def bpy_python(version: str) -> Path:
    """The interpreter holding bpy ``version``; a clear failure (never a skip) when missing."""
    python = BPY_PYTHONS[version]
    assert python.exists(), (f"bpy {version} is not installed at {python}; run scripts/test "
                             "(it creates .venv-bpy/) to test the add-on on every supported Blender")
    return python


def scenario(name: str, tmp_path: Path, bpy: str = "4.5", **cfg: Any) -> dict[str, Any]:
    """Run one bpy_driver scenario in a fresh process with an isolated Blender user dir, on
    Blender ``bpy`` (a key of BPY_PYTHONS)."""
    python = bpy_python(bpy)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    env.pop("PYTHONPATH", None)  # another interpreter must not import this venv's packages
    # the timeout doubles as the check that nothing (e.g. a left-over timer) hangs the exit
    # Blender warns of deprecated API use (Material.use_nodes in 5.0) as DeprecationWarning
    run = subprocess.run([str(python), "-W", "always::DeprecationWarning", DRIVER, name,
                          cfg_path], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    said = run.stdout + run.stderr
    assert "deprecat" not in said.lower(), said[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["bpy_version"].startswith(bpy + "."), result["bpy_version"]
    assert result["install"] == ["FINISHED"]
    assert result["timer_after_disable"] is False, "disabling must remove the timer"
    assert result["threads_after_disable"] == [], "disabling must stop the threads"
    return result


def safetensors_bytes(n: int = 16) -> bytes:
    """A well-formed safetensors file holding one float32 tensor."""
    data = struct.pack(f"<{n}f", *range(n))
    header = json.dumps({"lora_up.weight": {"dtype": "F32", "shape": [n],
                                            "data_offsets": [0, len(data)]}}).encode()
    return struct.pack("<Q", len(header)) + header + data


def png(path: Path, colour: tuple[int, int, int, int], size: int = 8) -> Path:
    Image.new("RGBA", (size, size), colour).save(path)
    return path


def blender_rows(path: str) -> list[float]:
    """The file's pixels as Blender lists them: RGBA floats, bottom row first."""
    img = Image.open(path).convert("RGBA").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return [v / 255 for v in img.tobytes()]
