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
