"""`LocalBackend`: the real worker pipelines in-process (tiny components on the CPU)."""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.backends.base import RefineOptions, TileTask
from service.backends.local import LocalBackend
from service.core.errors import ConfigError, NotFound, ParamsError
from service.core.jobs import JobStatus, TargetSpec
from service.core.params import LoraSpec, UpscaleParams
from service.jobs.service import build_job_service
from service.pipeline.refine import MemoryCache, TileWork, caption_tiles, refine_tiles
from service.settings import Settings
from workers.caption.pipeline import CaptionPipeline
from workers.tiny import caption as tiny_caption
from workers.tiny import upscale as tiny

pytestmark = pytest.mark.slow  # torch: tiny random SDXL/VLM pipelines on the CPU

OPTIONS = RefineOptions(prompt="stone", steps=4, strength=0.5, scheduler="euler", cfg_scale=5.0)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("tiny")
    lora = tiny.write_lora(tiny.build_components(work / "other")["unet"], work / "x.safetensors", 4)
    upscale = tiny.build_pipeline(workdir=work)
    caption = CaptionPipeline.from_components(tiny_caption.build_components())
    return {"upscale": upscale, "caption": caption, "lora": lora.read_bytes()}


@pytest.fixture
def backend(parts: dict, tmp_path: Path) -> LocalBackend:
    settings = Settings(data_dir=tmp_path / "data")
    return LocalBackend(settings, device="cpu", upscale=parts["upscale"],
                        caption=parts["caption"], lora_dir=tmp_path / "loras")


def tile(seed: int = 0, w: int = 64, h: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_refine_returns_a_changed_tile_of_the_same_size(backend) -> None:
    img = tile()
    result = asyncio.run(backend.refine(TileTask("3", img, "moss", 11), OPTIONS))
    assert result.tile_id == "3" and result.seed_used == 11
    assert result.image.shape == img.shape and result.image.dtype == np.uint8
    assert np.abs(result.image.astype(int) - img).mean() > 1.0
    assert result.accounting.attempts == 1


def test_style_image_and_loras_reach_the_pipeline(backend, parts) -> None:
    img = tile(1)

    def run(options: RefineOptions) -> np.ndarray:
        return asyncio.run(backend.refine(TileTask("0", img, "", 5), options)).image.astype(int)

    plain = run(OPTIONS)
    styled = run(RefineOptions(**{**OPTIONS.__dict__, "ip_adapter_image": tile(9, 32, 32),
                                  "ip_adapter_scale": 0.9}))
    assert np.abs(plain - styled).mean() > 1.0
    info = asyncio.run(backend.upload_model("grain.safetensors", parts["lora"]))
    assert info.name == "grain.safetensors" and info.size_bytes == len(parts["lora"])
    assert [m.name for m in asyncio.run(backend.list_models())] == ["grain.safetensors"]
    with_lora = run(RefineOptions(**{**OPTIONS.__dict__,
                                     "loras": (LoraSpec(name="grain", weight=1.0),)}))
    assert np.abs(plain - with_lora).mean() > 1.0
    asyncio.run(backend.delete_model("grain.safetensors"))
    with pytest.raises(NotFound):
        run(RefineOptions(**{**OPTIONS.__dict__, "loras": (LoraSpec(name="grain"),)}))


def test_pickle_lora_is_refused_and_not_kept(backend) -> None:
    with pytest.raises(ParamsError) as info:
        asyncio.run(backend.upload_model("evil.safetensors", pickle.dumps({"a": 1})))
    assert info.value.code == "lora_invalid"
    assert asyncio.run(backend.list_models()) == []


def test_caption_returns_keywords(backend) -> None:
    result = asyncio.run(backend.caption("7", tile(2), max_new_tokens=8))
    assert result.tile_id == "7" and result.caption


def test_runs_under_the_job_refine_loop(backend) -> None:
    cache = MemoryCache()
    tiles = {i: tile(i) for i in range(2)}
    captions = asyncio.run(caption_tiles(backend, tiles, cache))
    assert sorted(captions) == [0, 1] and all(captions.values())
    work = [TileWork(i, img, captions[i], seed=i) for i, img in tiles.items()]
    out = asyncio.run(refine_tiles(backend, work, OPTIONS, cache))
    assert sorted(out) == [0, 1]
    assert all(out[i].shape == tiles[i].shape for i in out)
    again = asyncio.run(refine_tiles(backend, work, OPTIONS, cache))  # cached: same pixels
    assert all(np.array_equal(out[i], again[i]) for i in out)


def test_health_reports_the_loaded_model(backend) -> None:
    info = asyncio.run(backend.health())
    assert info["status"] == "ok" and info["model_loaded"] is True and info["device"] == "cpu"


def test_no_cuda_gpu_is_a_clear_config_error(tmp_path: Path) -> None:
    # this machine has no CUDA GPU: the default device must say so and name the way out
    with pytest.raises(ConfigError) as info:
        LocalBackend(Settings(data_dir=tmp_path, local_device="cuda"))
    assert "CUDA" in info.value.message and "--backend runpod" in info.value.message


def test_missing_weights_are_a_clear_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AAT_WORKER_TINY", raising=False)
    backend = LocalBackend(Settings(data_dir=tmp_path, local_device="cpu"))
    with pytest.raises(ConfigError) as info:
        asyncio.run(backend.refine(TileTask("0", tile(), "", 1), OPTIONS))
    assert info.value.code == "weights_missing"
    assert "python -m workers.upscale.weights" in info.value.message


def _aat(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AAT_WORKER_TINY": "1", "AAT_LOCAL_DEVICE": "cpu",
           "AAT_DATA_DIR": str(tmp_path / "data"), "AAT_CONFIG": str(tmp_path / "none.toml")}
    return subprocess.run([sys.executable, "-m", "service.cli", "upscale", *args], env=env,
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)


def test_aat_upscale_with_the_local_backend_end_to_end(tmp_path: Path) -> None:
    src = tmp_path / "sprite.png"
    Image.fromarray(tile(5, 48, 40)).save(src)
    common = ["--scale", "2", "--tile-size", "64", "--overlap", "16", "--upscaler", "lanczos", "-q"]
    local = _aat([str(src), "-o", str(tmp_path / "local.png"), "--backend", "local", *common],
                 tmp_path)
    assert local.returncode == 0, local.stderr
    base = _aat([str(src), "-o", str(tmp_path / "base.png"), "--backend", "none", *common],
                tmp_path)
    assert base.returncode == 0, base.stderr
    refined = np.asarray(Image.open(tmp_path / "local.png").convert("RGB"), dtype=int)
    plain = np.asarray(Image.open(tmp_path / "base.png").convert("RGB"), dtype=int)
    assert refined.shape == plain.shape == (80, 96, 3)
    assert np.abs(refined - plain).mean() > 0.5  # the tiles were really refined


def test_aat_upscale_local_without_a_gpu_fails_cleanly(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from service.cli import _assemble

    src = tmp_path / "in.png"
    Image.fromarray(tile(6)).save(src)
    out = tmp_path / "out.png"
    monkeypatch.setenv("AAT_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("AAT_LOCAL_DEVICE", "cuda")  # this machine has none
    monkeypatch.setenv("AAT_CONFIG", str(tmp_path / "none.toml"))
    result = CliRunner().invoke(_assemble(), ["upscale", str(src), "-o", str(out),
                                              "--backend", "local", "-q"])
    assert result.exit_code == 3  # setup (service.cli.errors.SETUP): this machine has no GPU
    assert "error [backend_unavailable_local]" in result.output and "CUDA" in result.output
    assert not out.exists()


def test_a_job_runs_on_the_local_backend(job_settings, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AAT_WORKER_TINY", "1")  # tiny random pipelines instead of weights
    svc = build_job_service(job_settings(backend="local", local_device="cpu", job_threads=1))
    svc.start()
    try:
        buf = io.BytesIO()
        Image.fromarray(tile(8, 48, 48)).save(buf, "PNG")
        params = {"scale": 2, "tile_size": 64, "overlap": 16, "upscaler": "lanczos", "seed": 3,
                  "steps": 4, "strength": 0.5}
        job, _ = svc.submit(buf.getvalue(), filename="rock.png", params=UpscaleParams(**params),
                            target=TargetSpec(repo="game", path="rock.png"))
        deadline = time.monotonic() + 120
        while not (done := svc.get(job.id)).status.terminal and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        svc.stop()
    assert done.status == JobStatus.succeeded, done.error
    out = Image.open(tmp_path / "repo" / "rock_x2.png")
    assert out.size == (96, 96)
    tiles = svc.tiles(job.id)
    assert tiles and all(t["status"] == "refined" and t["caption"] for t in tiles)


def test_tiles_in_flight_together_share_one_batched_call(parts, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    pipe = parts["upscale"]
    calls: list[int] = []
    hook = pipe.pipe.unet.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    work = [TileWork(i, tile(20 + i), "", seed=i) for i in range(2)]
    try:
        outs = {}
        for batch in (1, 2):
            backend = LocalBackend(settings, device="cpu", upscale=pipe, caption=parts["caption"],
                                   batch_size=batch)
            assert asyncio.run(backend.max_concurrency()) == batch
            calls.clear()
            outs[batch] = asyncio.run(refine_tiles(backend, work, OPTIONS, MemoryCache()))
            outs[f"calls{batch}"] = list(calls)
    finally:
        hook.remove()
    assert len(outs["calls2"]) * 2 == len(outs["calls1"])  # half as many UNet passes...
    assert max(outs["calls2"]) == 2 * max(outs["calls1"])  # ...each on twice the tiles
    for i in range(2):  # and the same pixels, up to float noise
        assert np.abs(outs[1][i].astype(int) - outs[2][i]).max() <= 3


def test_without_the_gpu_packages_the_error_says_what_to_install(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the gpu extra were not installed
    with pytest.raises(ConfigError) as info:
        LocalBackend(Settings(data_dir=tmp_path, local_device="cpu"))
    assert "diffusers is missing" in info.value.message
    assert "pip install 'ai-assets-toolbox[gpu]'" in info.value.message


def test_models_that_do_not_fit_together_take_turns_on_the_gpu(parts, tmp_path: Path) -> None:
    """A 24 GB card cannot hold SDXL and Qwen3-VL-8B at once: the captioner is parked in CPU
    memory when SDXL needs the card and the other way round; results do not change."""
    need = 3.0 + 1.5  # working memory of one call each (the tiny weights add a few MB)
    settings = Settings(data_dir=tmp_path / "data", local_vram_gb=need)
    backend = LocalBackend(settings, device="cpu", upscale=parts["upscale"],
                           caption=parts["caption"], lora_dir=tmp_path / "loras")
    roomy = LocalBackend(Settings(data_dir=tmp_path / "data", local_vram_gb=80), device="cpu",
                         upscale=parts["upscale"], caption=parts["caption"],
                         lora_dir=tmp_path / "loras")
    health = asyncio.run(backend.health())
    assert "one model on the GPU at a time" in health["placement"]
    assert "both models stay on the GPU" in asyncio.run(roomy.health())["placement"]

    async def caption_then_refine(b: LocalBackend) -> np.ndarray:
        await b.caption("t", tile(1))
        assert not parts["caption"].parked
        return (await b.refine(TileTask("t", tile(2), "", 3), OPTIONS)).image

    try:
        shared = asyncio.run(caption_then_refine(backend))
        assert parts["caption"].parked and not parts["upscale"].parked
        asyncio.run(backend.caption("t", tile(1)))
        assert parts["upscale"].parked and not parts["caption"].parked
        assert np.array_equal(shared, asyncio.run(caption_then_refine(roomy)))
    finally:
        parts["caption"].unpark()
        parts["upscale"].unpark()
