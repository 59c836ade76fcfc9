"""One pipeline: `aat upscale --backend runpod` and a job give the same pixels.

The same input, parameters and seed go through the installed `aat` console script and through
a job on the embedded executor, both against the same emulated RunPod endpoints (echo worker:
each tile's red channel is raised by an amount that depends on the tile's seed). Before the
pipeline was shared, the two differed: the CLI captioned every tile before refining any and
colour-fixed the blended image once, the job colour-fixes each tile as it arrives. The job's
behaviour is the one both now have, so the files must match pixel for pixel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core.imaging import ImageLimits, load_image
from service.core.jobs import JobStatus, TargetSpec
from service.core.params import UpscaleParams
from service.jobs.service import build_job_service
from service.pipeline.assembly import render
from service.upscalers.registry import get_upscaler

ROOT = Path(__file__).resolve().parents[2]
AAT = shutil.which("aat", path=str(Path(sys.executable).parent)) or "aat"
SPRITE = ROOT / "examples" / "sprite.png"
COMMON = {"scale": 2, "tile_size": 128, "overlap": 32, "upscaler": "lanczos", "seed": 7,
          "prompt": "stone knight", "caption": True}


def _cli(args: list[str], emulator: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update({"RUNPOD_API_KEY": emulator.api_key, "AAT_RUNPOD_BASE_URL": emulator.url,
                "RUNPOD_UPSCALE_ENDPOINT_ID": "upscale", "RUNPOD_CAPTION_ENDPOINT_ID": "caption",
                "AAT_RUNPOD_POLL_MIN_S": "0.01", "AAT_DATA_DIR": str(cwd / "cli-data")})
    return subprocess.run([AAT, "upscale", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=env)


def _job(settings: Any, data: bytes, params: UpscaleParams) -> Path:
    svc = build_job_service(settings)
    svc.start()
    try:
        job, _ = svc.submit(data, filename="sprite.png", params=params,
                            target=TargetSpec(repo="game", path="sprite.png"))
        deadline = time.monotonic() + 120
        done = svc.get(job.id)
        while not done.status.terminal:
            assert time.monotonic() < deadline, "the job did not finish"
            done = svc.get(job.id)
            time.sleep(0.05)
    finally:
        svc.stop()
    assert done.status == JobStatus.succeeded, done.error
    assert done.cost.runpod_jobs > 0 and done.cost.usd > 0
    return settings.repos["game"] / done.output.delivered_path


def _rgba(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


@pytest.mark.parametrize(("colour_fix", "seam_fix"), [("wavelet", "none"), ("none", "band")])
def test_aat_upscale_and_a_job_give_identical_pixels(
        tmp_path: Path, runpod_emulator: Any, runpod_settings: Any, job_settings: Any,
        colour_fix: str, seam_fix: str) -> None:
    emulator = runpod_emulator(workers=4)
    params = UpscaleParams(**COMMON, colour_fix=colour_fix, seam_fix=seam_fix)
    out = tmp_path / "cli.png"
    cli = _cli([str(SPRITE), "-o", str(out), "-q", "--backend", "runpod", "--scale", "2",
                "--tile-size", "128", "--overlap", "32", "--upscaler", "lanczos", "--seed", "7",
                "--prompt", "stone knight", "--colour-fix", colour_fix, "--seam-fix", seam_fix],
               emulator, tmp_path)
    assert cli.returncode == 0, cli.stderr
    after_cli = emulator.stats("upscale")["submitted"]
    captions = emulator.stats("caption")["submitted"]
    rp = runpod_settings(emulator)
    delivered = _job(job_settings(**{k: getattr(rp, k) for k in (
        "backend", "runpod_api_key", "runpod_base_url", "runpod_upscale_endpoint_id",
        "runpod_caption_endpoint_id", "runpod_poll_min_s", "runpod_poll_max_s")}),
        SPRITE.read_bytes(), params)

    cli_px, job_px = _rgba(out), _rgba(delivered)
    assert cli_px.shape == job_px.shape
    assert np.array_equal(cli_px, job_px)
    if colour_fix == "none":  # the seed-dependent tints show: every tile really was refined
        base = render(load_image(SPRITE.read_bytes(), limits=ImageLimits()), params,
                      get_upscaler("lanczos")).pixels
        opaque = base[..., 3] > 0
        assert cli_px[..., 0][opaque].mean() > base[..., 0][opaque].astype(float).mean() + 0.5
    # both really went through RunPod, one job per tile each (no shared cache between them)
    up = emulator.stats("upscale")
    assert after_cli > 0 and up["submitted"] == 2 * after_cli
    assert emulator.stats("caption")["submitted"] == 2 * captions > 0
    assert f"seed 7, {after_cli + captions} RunPod jobs ~$" in cli.stdout


def test_running_the_same_command_again_pays_for_nothing(tmp_path: Path,
                                                         runpod_emulator: Any) -> None:
    """Refined tiles are cached in the data directory as a job's are: after an interrupted or
    finished run, the same command with the same seed submits no RunPod job again."""
    emulator = runpod_emulator(workers=4)
    args = [str(SPRITE), "-q", "--backend", "runpod", "--scale", "2", "--tile-size", "128",
            "--overlap", "32", "--upscaler", "lanczos", "--seed", "11"]
    first = _cli([*args, "-o", str(tmp_path / "a.png")], emulator, tmp_path)
    assert first.returncode == 0, first.stderr
    paid = emulator.stats("upscale")["submitted"]
    again = _cli([*args, "-o", str(tmp_path / "b.png")], emulator, tmp_path)
    assert again.returncode == 0, again.stderr
    assert emulator.stats("upscale")["submitted"] == paid > 0
    assert np.array_equal(_rgba(tmp_path / "a.png"), _rgba(tmp_path / "b.png"))
    assert "RunPod jobs" in first.stdout and "RunPod jobs" not in again.stdout
    assert "tiles from the cache" in again.stdout
