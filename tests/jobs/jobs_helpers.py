"""Helpers for the job tests: tiny images, emulated RunPod endpoints, polling, expected output."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.core.imaging import ImageLimits, encode_image, load_image
from service.core.params import UpscaleParams
from service.pipeline.assembly import finish, fix_tile
from service.pipeline.prepare import prepare
from service.pipeline.refine import derive_seed
from service.upscalers.registry import get_upscaler
from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler
from workers.emulator.echo import tint

ROOT = Path(__file__).resolve().parents[2]


def png(size: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def small_params(**extra: Any) -> UpscaleParams:
    values: dict[str, Any] = {"scale": 2, "tile_size": 64, "overlap": 16, "upscaler": "lanczos",
                              "caption": False, "seed": 7}
    values.update(extra)
    return UpscaleParams(**values)


def emulator(workers: int = 4, latency_s: float = 0.05, faults: Faults | None = None,
             caption_latency_s: float = 0.01) -> EmulatorServer:
    upscale = EndpointConfig(handler=resolve_handler("echo"), workers=workers,
                             latency_s=latency_s, faults=faults or Faults())
    caption = EndpointConfig(handler=resolve_handler("echo"), workers=workers,
                             latency_s=caption_latency_s)
    return EmulatorServer({"upscale": upscale, "caption": caption})


def runpod_settings(emu: EmulatorServer) -> dict[str, Any]:
    return {"backend": "runpod", "runpod_api_key": emu.api_key, "runpod_base_url": emu.url,
            "runpod_upscale_endpoint_id": "upscale", "runpod_caption_endpoint_id": "caption",
            "runpod_backoff_base_s": 0.05, "runpod_poll_max_s": 0.2}


def runpod_env(emu: EmulatorServer) -> dict[str, str]:
    env = {f"AAT_{k.upper()}": str(v) for k, v in runpod_settings(emu).items()}
    env["RUNPOD_API_KEY"] = emu.api_key
    return env


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
               ) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def expected_echo_pixels(data: bytes, params: UpscaleParams, seed: int,
                         filename: str | None = None) -> np.ndarray:
    """What a job must produce when every tile is refined by the echo worker (tint by seed).
    The params are resolved for the input as the service does at submit (a noise square with
    no type given reads as a tileable texture, so it is upscaled as one)."""
    image = load_image(data, limits=ImageLimits())
    params = params.resolved_for(filename, image.rgb, image.alpha)
    prepared = prepare(image, params, get_upscaler(params.upscaler))
    refined = {i: fix_tile(prepared, i, tint(prepared.tile(i), derive_seed(seed, i)))
               for i in range(len(prepared.plan.tiles))}  # each tile colour-fixed as it arrives
    done = finish(prepared, refined, params, colour_fixed=True)
    return pixels(encode_image(done.rgb, done.alpha, "png"))


def quiet_moment(svc: Any, emu: EmulatorServer, job_id: str, min_done: int) -> bool:
    """True once ``min_done`` tiles are refined and every tile sent in a RunPod job so far has
    that job's id recorded. Between RunPod accepting ``/run`` and the id being committed there
    is a window of milliseconds in which a kill would pay that tile twice; the kill tests kill
    outside it (:func:`kill_when_quiet`)."""
    stage = svc.get(job_id).stages.get("refine")
    if not stage or stage.done < min_done:
        return False
    recorded = sum(1 for t in svc.store.get_tiles(job_id) if t.remote_job_id)
    return recorded == tiles_sent(emu.stats("upscale"))


def hold_when(ready: Callable[[], Any], emu: EmulatorServer, endpoint: str,
              what: str) -> None:
    """Once ``ready()`` (e.g. four tiles refined), scale ``endpoint`` to zero workers: the
    RunPod jobs in flight then wait for a GPU, the job cannot end, and once the last slot is
    refilled no ``/run`` is sent any more, so a kill test's quiet moment (every RunPod job sent
    recorded, some still out) comes and lasts. Without it a loaded machine, slow to record each
    id, found no quiet moment until the job had ended. The caller scales back up before the
    next runner starts."""
    wait_until(ready, 60, what)
    emu.scale(endpoint, 0)


def kill_when_quiet(pid: int, quiet: Callable[[], bool], *, group: bool = False,
                    what: str = "a quiet moment", timeout: float = 60.0) -> None:
    """SIGKILL the runner ``pid`` (its whole process group with ``group``) at a moment when
    ``quiet()`` holds (e.g. :func:`quiet_moment`: every RunPod job sent has its id recorded).
    Checking and then killing leaves a gap in which a loaded machine lets the runner send one
    more ``/run`` and die before recording it, paying that tile twice; so the runner is frozen
    (SIGSTOP) first, a request it had already put on the wire is given time to reach the
    emulator, and it is killed only if it is still quiet, frozen. Otherwise it goes on
    (SIGCONT) and the next quiet moment is tried (see :func:`hold_when` for making one
    last)."""
    def send(sig: signal.Signals) -> None:
        if group:
            os.killpg(os.getpgid(pid), sig)
        else:
            os.kill(pid, sig)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if quiet():
            send(signal.SIGSTOP)
            time.sleep(1.0)  # a /run already sent reaches the emulator, frozen or not
            if quiet():
                send(signal.SIGKILL)
                return
            send(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def refined(svc: Any, job_id: str) -> int:
    """Tiles of the job refined so far."""
    stage = svc.get(job_id).stages.get("refine")
    return stage.done if stage else 0


def tiles_sent(stats: dict[str, Any]) -> int:
    """Tiles the emulated endpoint received, over all its jobs (a job may carry several)."""
    return sum(int(n) * jobs for n, jobs in stats["tiles_per_job"].items())


def embedded_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process like `aat up`'s job side: the embedded executor running jobs with ``env``
    (a test kills it with SIGKILL to crash mid-job, or stops it with SIGTERM)."""
    code = ("import time, logging\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "from service.settings import load_settings\n"
            "from service.jobs.service import build_job_service\n"
            "build_job_service(load_settings()).start()\n"
            "time.sleep(600)\n")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
