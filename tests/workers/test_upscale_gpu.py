"""Real weights on a real GPU: one smoke test per optional feature (gpu marker).

Run on a GPU host after ``python -m workers.upscale.weights $AAT_WEIGHTS_DIR`` and
``python -m workers.caption.weights $AAT_WEIGHTS_DIR``::

    AAT_GPU_TESTS=1 AAT_WEIGHTS_DIR=/models pytest tests/workers/test_upscale_gpu.py -q
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(os.environ.get("AAT_GPU_TESTS") != "1" or not torch.cuda.is_available(),
                       reason="needs AAT_GPU_TESTS=1, a CUDA GPU and the baked weights"),
]


@pytest.fixture(scope="module")
def pipe():
    from workers.upscale.pipeline import UpscalePipeline

    return UpscalePipeline.from_weights(device="cuda")


@pytest.fixture(scope="module")
def tile() -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(40, 220, 1024)[None, :, None].repeat(1024, 0).repeat(3, 2)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def refine(pipe, tile, **changes) -> np.ndarray:
    from workers.upscale.pipeline import RefineSettings, TileJob

    settings = RefineSettings(**{"prompt": "stone wall, moss", "steps": 20, **changes})
    [out] = pipe.refine([TileJob("0", tile, "", 1)], settings)
    arr = np.asarray(out, dtype=np.int16)
    assert arr.shape == (1024, 1024, 3) and 5 < arr.mean() < 250  # no NaN-black fp16 output
    return arr


def test_controlnet_ip_adapter_and_long_prompts_each_change_the_tile(pipe, tile) -> None:
    base = refine(pipe, tile)
    assert np.abs(base - refine(pipe, tile, controlnet_scale=0.0)).mean() > 0.5
    style = Image.new("RGB", (224, 224), (200, 40, 40))
    assert np.abs(base - refine(pipe, tile, ip_adapter_image=style, ip_adapter_scale=0.8)
                  ).mean() > 0.5
    long_prompt = "stone wall, moss, " * 30 + "glowing blue runes"
    assert np.abs(base - refine(pipe, tile, prompt=long_prompt)).mean() > 0.1


def test_two_loras_from_the_volume_change_the_tile(pipe, tile) -> None:
    from service.core.params import LoraSpec
    from workers.upscale import models

    names = [m.name for m in models.list_models(pipe.lora_dir).models][:2]
    if len(names) < 2:
        pytest.fail(f"put two SDXL LoRAs in {models.lora_dir()} to run this test")
    base = refine(pipe, tile)
    assert np.abs(base - refine(pipe, tile, loras=[LoraSpec(name=names[0], weight=0.8),
                                                         LoraSpec(name=names[1], weight=0.5)])).mean() > 0.5


def test_caption_model_answers_with_keywords() -> None:
    from workers.caption.pipeline import CaptionPipeline

    captioner = CaptionPipeline.from_weights(device="cuda")
    image = Image.new("RGB", (512, 512), (30, 120, 30))
    [text] = captioner.caption([image])
    assert text and len(text.split(", ")) <= 15 and "\n" not in text
