"""The real worker handlers behind the RunPod emulator, driven by the service's RunPod client.

Everything but the cloud is real: ``RunPodBackend`` (httpx over loopback) → emulated endpoint
(queue, workers, /run + /status) → ``workers/upscale/handler.py`` and
``workers/caption/handler.py`` with tiny random models (``AAT_WORKER_TINY=1``).
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import numpy as np
import pytest

from service.backends.base import RefineOptions, TileTask
from service.backends.runpod import RunPodBackend
from service.core.errors import AatError
from service.core.params import LoraSpec
from service.settings import Settings
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler
from workers.tiny import upscale as tiny

pytestmark = pytest.mark.slow  # torch: tiny random SDXL/VLM pipelines on the CPU

OPTIONS = RefineOptions(prompt="stone", steps=4, strength=0.5, scheduler="euler", cfg_scale=5.0)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory):
    volume = tmp_path_factory.mktemp("volume")
    mp = pytest.MonkeyPatch()
    mp.setenv("AAT_WORKER_TINY", "1")
    mp.setenv("AAT_LORA_DIR", str(volume / "loras"))
    from workers.caption import handler as caption_handler
    from workers.upscale import handler as upscale_handler

    upscale_handler.pipeline.reset()
    caption_handler.pipeline.reset()
    endpoints = {"up": EndpointConfig(handler=resolve_handler("upscale"), workers=1),
                 "cap": EndpointConfig(handler=resolve_handler("caption"), workers=1)}
    with EmulatorServer(endpoints) as emu:
        settings = Settings(backend="runpod", runpod_api_key=emu.api_key,
                            runpod_base_url=emu.url, runpod_upscale_endpoint_id="up",
                            runpod_caption_endpoint_id="cap", data_dir=volume / "data")
        yield settings, volume / "loras"
    upscale_handler.pipeline.reset()
    caption_handler.pipeline.reset()
    mp.undo()


def run(settings: Settings, fn):
    async def go():
        backend = RunPodBackend(settings)
        try:
            return await fn(backend)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def tile(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_refine_and_caption_round_trip(emulated) -> None:
    settings, _ = emulated
    img = tile()

    async def go(b: RunPodBackend):
        return (await b.refine(TileTask("2_3", img, "moss", 17), OPTIONS),
                await b.caption("2_3", img, max_new_tokens=8))

    refined, caption = run(settings, go)
    assert refined.tile_id == "2_3" and refined.seed_used == 17
    assert refined.image.shape == img.shape
    assert np.abs(refined.image.astype(int) - img).mean() > 1.0
    assert refined.accounting.remote_job_ids  # a real RunPod job ran
    assert caption.caption


def test_a_style_image_reaches_the_emulated_worker_s_ip_adapter_plus(emulated) -> None:
    """The emulated worker runs the IP-Adapter kind the image bakes (Plus: a resampler over the
    image encoder's patch features), and a style image sent by the client changes the tile."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    from workers.upscale import handler as upscale_handler

    settings, _ = emulated
    style = np.full((32, 32, 3), (235, 30, 20), dtype=np.uint8)

    async def go(b: RunPodBackend):
        plain = await b.refine(TileTask("0", tile(2), "", 4), OPTIONS)
        styled = await b.refine(TileTask("0", tile(2), "", 4), RefineOptions(
            **{**OPTIONS.__dict__, "ip_adapter_image": style, "ip_adapter_scale": 0.9}))
        return plain.image.astype(int), styled.image.astype(int)

    plain, styled = run(settings, go)
    assert np.abs(plain - styled).mean() > 1.0
    [proj] = upscale_handler.pipeline.get().pipe.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(proj, IPAdapterPlusImageProjection)


def test_lora_lifecycle_and_structured_errors(emulated, tmp_path: Path) -> None:
    settings, lora_dir = emulated
    data = tiny.write_lora(tiny.build_components(tmp_path)["unet"], tmp_path / "l.safetensors",
                           seed=3).read_bytes()
    lora = (LoraSpec(name="grain", weight=0.8),)

    async def go(b: RunPodBackend):
        info = await b.upload_model("grain.safetensors", data)
        names = [m.name for m in await b.list_models()]
        with_lora = await b.refine(TileTask("0", tile(1), "", 1),
                                   RefineOptions(**{**OPTIONS.__dict__, "loras": lora}))
        await b.delete_model("grain.safetensors")
        errors = {}
        for label, call in {
            "missing": b.refine(TileTask("0", tile(1), "", 1),
                                RefineOptions(**{**OPTIONS.__dict__, "loras": lora})),
            "pickle": b.upload_model("evil.safetensors", pickle.dumps({"x": 1})),
            "escape": b.delete_model("../../etc"),
        }.items():
            with pytest.raises(AatError) as caught:
                await call
            errors[label] = caught.value
        return info, names, with_lora, errors

    info, names, with_lora, errors = run(settings, go)
    assert info.name == "grain.safetensors" and info.size_bytes == len(data)
    assert names == ["grain.safetensors"]
    assert with_lora.image.shape == (48, 64, 3)
    assert errors["missing"].code == "lora_not_found" and not errors["missing"].retryable
    assert errors["pickle"].code == "lora_invalid"
    assert errors["escape"].code == "path_forbidden"
    assert list(lora_dir.iterdir()) == []  # nothing half-written, nothing left behind


def test_the_real_workers_behind_aat_emulate_answer_the_runpod_client(tmp_path: Path) -> None:
    """`aat emulate --worker upscale --worker caption` as its own process (what a user runs to
    try the real handlers without RunPod): refined tiles, captions and structured errors."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AAT_WORKER_TINY": "1", "AAT_LORA_DIR": str(tmp_path / "loras"),
           "RUNPOD_API_KEY": "emulate-key"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "emulate", "--port", str(port), "--workers", "1",
         "--worker", "upscale", "--worker", "caption"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v2"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                httpx.get(f"{url}/upscale/health", headers={"authorization": "Bearer x"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "aat emulate did not answer"
                time.sleep(0.1)
        settings = Settings(backend="runpod", runpod_api_key="emulate-key", runpod_base_url=url,
                            runpod_upscale_endpoint_id="upscale",
                            runpod_caption_endpoint_id="caption", data_dir=tmp_path / "data")
        img = tile(5)

        async def go(b: RunPodBackend):
            refined = await b.refine(TileTask("1_1", img, "moss", 23), OPTIONS)
            caption = await b.caption("1_1", img, max_new_tokens=8)
            with pytest.raises(AatError) as missing:
                await b.refine(TileTask("1_1", img, "", 1), RefineOptions(
                    **{**OPTIONS.__dict__, "loras": (LoraSpec(name="nope", weight=1.0),)}))
            return refined, caption, missing.value

        refined, caption, missing = run(settings, go)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "RunPod emulator: upscale (upscale), caption (caption)" in out, out
    assert refined.tile_id == "1_1" and refined.seed_used == 23
    assert refined.image.shape == img.shape
    assert np.abs(refined.image.astype(int) - img).mean() > 1.0  # the tiny SDXL really ran
    assert caption.caption.strip()
    assert missing.code == "lora_not_found" and not missing.retryable
    assert "nope" in missing.message
    assert "emulate-key" not in out


def test_tiles_sharing_a_runpod_job_get_the_same_pixels_in_fewer_jobs(emulated) -> None:
    """The real upscale handler takes two tiles in one job (runpod_tiles_per_job=2) and refines
    each with its own seed: the same pixels as one tile per job, in half the RunPod jobs."""
    import httpx

    settings, _ = emulated
    root = settings.runpod_base_url.rsplit("/v2", 1)[0]
    work = [TileTask(f"{i}_0", tile(10 + i), "moss", 100 + i) for i in range(4)]

    def jobs() -> tuple[int, int]:
        stats = httpx.get(f"{root}/_emulator/stats/up").json()
        return stats["submitted"], stats["status_polls"]

    outs, counts = {}, {}
    for per_job in (1, 2):
        before = jobs()
        paired = settings.model_copy(update={"runpod_tiles_per_job": per_job,
                                             "runpod_max_concurrency": 1})

        async def go(b: RunPodBackend):
            sem = asyncio.Semaphore(await b.max_concurrency())

            async def one(t: TileTask):
                async with sem:
                    return await b.refine(t, OPTIONS)
            return await asyncio.gather(*(one(t) for t in work))

        outs[per_job] = run(paired, go)
        after = jobs()
        counts[per_job] = (after[0] - before[0], after[1] - before[1])
    assert counts[1][0] == 4 and counts[2][0] == 2  # RunPod jobs (/run requests)
    for alone, shared, t in zip(outs[1], outs[2], work, strict=True):
        assert shared.tile_id == alone.tile_id == t.tile_id and shared.seed_used == t.seed
        assert np.array_equal(shared.image, alone.image)
    assert np.abs(outs[2][0].image.astype(int) - outs[2][1].image).mean() > 1.0
