"""Where the local backend keeps its models, decided from the card's memory and model sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backends.local_memory import plan, weights_on_disk_gb

SDXL = 9.6  # GB of fp16 weights: UNet, text encoders, ControlNet tile, VAE, IP-Adapter Plus
QWEN3_VL_8B = 16.6
QWEN3_VL_2B = 4.3


@pytest.mark.parametrize(("card", "caption", "together", "words"), [
    (80, QWEN3_VL_8B, True, "both models stay on the GPU"),
    (24, QWEN3_VL_8B, False, "one model on the GPU at a time"),  # RTX 4090 / 3090
    (24, QWEN3_VL_2B, True, "both models stay on the GPU"),
    (16, QWEN3_VL_8B, False, "caption does not fit"),
])
def test_placement_by_card(card: float, caption: float, together: bool, words: str) -> None:
    placement = plan(card, {"upscale": SDXL, "caption": caption})
    assert placement.together is together
    assert words in placement.describe()


def test_a_card_too_small_for_sdxl_says_so() -> None:
    text = plan(8, {"upscale": SDXL}).describe()
    assert "upscale does not fit" in text and "runpod" in text


def test_sizes_come_from_the_baked_files(tmp_path: Path) -> None:
    def blob(rel: str, size: int) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        with (tmp_path / rel).open("wb") as fh:
            fh.truncate(size)  # sparse: sizes without writing gigabytes

    blob("base-diffusers/unet/diffusion_pytorch_model.fp16.safetensors", 5_100_000_000)
    blob("base/Illustrious-XL-v2.0.safetensors", 6_900_000_000)  # converted: not loaded
    blob("controlnet-tile/diffusion_pytorch_model.safetensors", 2_500_000_000)
    blob("caption-vlm/model-00001-of-00004.safetensors", 4_000_000_000)
    assert weights_on_disk_gb(tmp_path) == {"upscale": 7.6, "caption": 4.0}
