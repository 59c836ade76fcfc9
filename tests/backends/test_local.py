"""`LocalBackend`: the real worker pipelines in-process (tiny components on the CPU)."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import numpy as np
import pytest

from service.backends.base import RefineOptions, TileTask
from service.backends.local import LocalBackend
from service.core.errors import ConfigError, NotFound, ParamsError
from service.core.params import LoraSpec
from service.jobs.refine import MemoryCache, TileWork, caption_tiles, refine_tiles
from service.settings import Settings
from workers.caption import tiny as tiny_caption
from workers.caption.pipeline import CaptionPipeline
from workers.upscale import tiny
from workers.upscale.pipeline import UpscalePipeline

OPTIONS = RefineOptions(prompt="stone", steps=4, strength=0.5, scheduler="euler", cfg_scale=5.0)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("tiny")
    comps = tiny.build_components(work)
    lora = tiny.write_lora(tiny.build_components(work / "other")["unet"], work / "x.safetensors", 4)
    upscale = UpscalePipeline.from_components(
        comps, ip_adapter=tiny.ip_adapter_state_dict(comps["unet"]))
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
