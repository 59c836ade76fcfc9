"""Diffusers' own call on the worker's pipeline object, the reference of the golden tests."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from workers.upscale.pipeline import UpscalePipeline


def styled_reference(ours: UpscalePipeline, tile: Image.Image, *, prompt: str, style: Image.Image,
                     scale: float, strength: float, steps: int, cfg: float,
                     controlnet_scale: float, seed: int) -> np.ndarray:
    """``StableDiffusionXLControlNetImg2ImgPipeline.__call__`` with a text prompt, diffusers'
    own ``ip_adapter_image`` encoding and ``set_ip_adapter_scale``, Euler, the tile as the
    control image: what our refine with the same settings must give."""
    ref = ours.pipe
    ref.scheduler = EulerDiscreteScheduler.from_config(ours._base_scheduler)
    ref.set_ip_adapter_scale(scale)
    with torch.inference_mode():
        [want] = ref(prompt=prompt, image=tile, control_image=tile, strength=strength,
                     num_inference_steps=steps, guidance_scale=cfg,
                     controlnet_conditioning_scale=controlnet_scale, ip_adapter_image=style,
                     generator=torch.Generator("cpu").manual_seed(seed)).images
    return np.asarray(want, np.int16)
