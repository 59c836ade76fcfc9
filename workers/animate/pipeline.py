"""Qwen-Image-Edit for one animation frame, top to bottom: load, preprocess, run, postprocess.

Load: diffusers' ``QwenImageEditPipeline`` from the baked folder (bf16 on a GPU) or from
ready components (the tiny random ones of :mod:`workers.tiny.animate` in tests). Preprocess:
the canvas (the sprite on its key colour) as RGB; the output keeps the canvas's size rounded
down to the model's multiple of 16. Run: the edit prompt, a negative prompt (true CFG when
``true_cfg_scale > 1``), a seeded generator. Postprocess: back to exactly the canvas size, so
the service's keying and alignment see the geometry they sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import QwenImageEditPipeline
from PIL import Image

log = logging.getLogger(__name__)

NEGATIVE = "blurry, cropped, extra limbs, gradient background, shadow, text, watermark"
MULTIPLE = 16


class AnimatePipeline:
    def __init__(self, pipe: Any, device: str) -> None:
        self.pipe: Any = pipe  # a QwenImageEditPipeline (diffusers' types are loose)
        self.device = device

    @classmethod
    def from_components(cls, components: dict[str, Any], device: str = "cpu") -> AnimatePipeline:
        pipe: Any = QwenImageEditPipeline(**components)
        return cls(pipe.to(device), device)

    @classmethod
    def from_weights(cls, device: str = "cuda", root: Path | None = None) -> AnimatePipeline:
        from workers.animate.weights import local_path

        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        pipe: Any = QwenImageEditPipeline.from_pretrained(
            str(local_path("edit", root)), dtype=dtype, local_files_only=True)
        return cls(pipe.to(device), device)

    def edit(self, canvas: Image.Image, prompt: str, *, seed: int, steps: int,
             true_cfg_scale: float, negative_prompt: str = "") -> Image.Image:
        """``canvas`` edited as ``prompt`` says, at the canvas's own size."""
        image = canvas.convert("RGB")
        width = max(MULTIPLE, image.width // MULTIPLE * MULTIPLE)
        height = max(MULTIPLE, image.height // MULTIPLE * MULTIPLE)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            out = self.pipe(image=image, prompt=prompt, negative_prompt=negative_prompt or NEGATIVE,
                            true_cfg_scale=true_cfg_scale, num_inference_steps=steps,
                            width=width, height=height, generator=generator, output_type="pil")
        result: Image.Image = out.images[0]
        if result.size != image.size:
            result = result.resize(image.size, Image.Resampling.LANCZOS)
        return result

    def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {"model_loaded": True}
        if self.device.startswith("cuda") and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            info.update(gpu=torch.cuda.get_device_name(), vram_total_gb=round(total / 2**30, 1),
                        vram_used_gb=round((total - free) / 2**30, 1))
        return info
