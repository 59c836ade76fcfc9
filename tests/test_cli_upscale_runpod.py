"""`aat upscale --backend runpod` end to end: the console script against emulated RunPod
endpoints (caption + upscale, the echo worker), one RunPod job per tile, alpha kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
AAT = shutil.which("aat", path=str(Path(sys.executable).parent)) or "aat"
SPRITE = ROOT / "examples" / "sprite.png"


def _run(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(env_extra)
    return subprocess.run([AAT, *args], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env=env)


def _emulator_env(emulator: Any, caption: bool = True) -> dict[str, str]:
    env = {"RUNPOD_API_KEY": emulator.api_key, "AAT_RUNPOD_BASE_URL": emulator.url,
           "RUNPOD_UPSCALE_ENDPOINT_ID": "upscale", "AAT_RUNPOD_BACKOFF_BASE_S": "0.01",
           "AAT_RUNPOD_POLL_MIN_S": "0.01", "AAT_DATA_DIR": "data"}
    if caption:
        env["RUNPOD_CAPTION_ENDPOINT_ID"] = "caption"
    return env


def test_runpod_backend_refines_every_tile_once_and_keeps_alpha(
        tmp_path: Path, runpod_emulator: Any) -> None:
    emulator = runpod_emulator(workers=4)
    base = tmp_path / "base.png"
    out = tmp_path / "refined.png"
    common = [str(SPRITE), "--scale", "2", "--tile-size", "128", "--overlap", "32",
              "--upscaler", "lanczos", "-q"]
    plain = _run(["upscale", *common, "-o", str(base)], {}, tmp_path)
    assert plain.returncode == 0, plain.stderr
    # no colour fix: it would pull each tinted tile back to the base upscale's colour (the
    # default; tests/pipeline/test_one_pipeline.py compares that path with a job's pixels)
    done = _run(["upscale", *common, "-o", str(out), "--backend", "runpod", "--seed", "7",
                 "--prompt", "stone knight", "--colour-fix", "none"],
                _emulator_env(emulator), tmp_path)
    assert done.returncode == 0, done.stderr
    refined = np.asarray(Image.open(out))
    plain_px = np.asarray(Image.open(base))
    assert refined.shape == plain_px.shape and refined.shape[2] == 4  # size and alpha kept
    assert np.array_equal(refined[..., 3], plain_px[..., 3])
    opaque = plain_px[..., 3] > 0
    # the echo worker raised every tile's red channel: the refine really ran and was blended in
    assert refined[..., 0][opaque].astype(int).mean() > plain_px[..., 0][opaque].astype(int).mean()
    w, h = Image.open(SPRITE).size
    up = emulator.stats("upscale")
    cap = emulator.stats("caption")
    assert cap["submitted"] == up["submitted"]  # one caption per tile
    assert up["submitted"] >= 4 and all(n == 1 for n in up["request_keys"].values())
    assert up["by_status"].get("COMPLETED") == up["submitted"]
    assert (w * 2, h * 2) == Image.open(out).size


def test_runpod_backend_without_key_says_what_to_set(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    result = _run(["upscale", str(SPRITE), "-o", str(out), "--backend", "runpod", "-q"], {},
                  tmp_path)
    assert result.returncode != 0
    assert "RUNPOD_API_KEY" in result.stderr and "\n" not in result.stderr.strip()
    assert not out.exists()


def test_runpod_worker_failure_fails_cleanly_and_writes_nothing(
        tmp_path: Path, runpod_emulator: Any) -> None:
    emulator = runpod_emulator(workers=2, faults="fatal=1")
    out = tmp_path / "o.png"
    result = _run(["upscale", str(SPRITE), "-o", str(out), "--backend", "runpod", "-q",
                   "--tile-size", "128", "--overlap", "32", "--upscaler", "lanczos"],
                  _emulator_env(emulator, caption=False) | {"AAT_RUNPOD_TILE_ATTEMPTS": "2"},
                  tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error [") and not out.exists()
    assert emulator.stats("upscale")["submitted"] >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".aat-tmp")]
