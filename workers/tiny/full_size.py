"""Full-size SDXL UNet, ControlNet, VAE and IP-Adapter Plus with random weights, for timing
without downloads.

Time per tile depends on shapes, not on weight values: these are the real layouts (configs in
``sdxl_configs/``, copied from the published models) filled with small random numbers. Built on
the meta device and then materialised on the target device in the target dtype, so a 2.6 B
parameter UNet costs its memory once and no initialiser time. The two CLIP text encoders keep
their real widths (768 and 1280, so the UNet gets 2048-wide embeddings and a 1280 pooled
vector) but only one layer each: prompt encoding is about 1% of a tile's time. The
IP-Adapter Plus is the one the worker image bakes, at full size: the ViT-H/14 image encoder
(which the worker runs once per style image, and once on a blank image for calls without one)
and the resampler plus the per-layer image-token projections
(:func:`ip_adapter_plus_state_dict`). :class:`SharedValues` makes the CPU proof fit in memory.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from workers.tiny import upscale as tiny_upscale

CONFIGS = Path(__file__).with_name("sdxl_configs")


def config(name: str) -> dict[str, Any]:
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


POOL = 1 << 20  # random values drawn once and copied into every weight (drawing 4.5 B is slow)


def _pool(device: str, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(2 * POOL, generator=gen, device=device).to(dtype)


def _fill(p: torch.Tensor, pool: torch.Tensor, gen: torch.Generator, fan_in: int) -> None:
    """Fill ``p`` from a random offset of ``pool``, scaled to N(0, 1/fan_in)."""
    flat = p.view(-1)
    start = int(torch.randint(POOL, (1,), generator=gen, device=pool.device))
    for i in range(0, flat.numel(), POOL):
        n = min(POOL, flat.numel() - i)
        flat[i:i + n].copy_(pool[start:start + n])
    flat.mul_(1.0 / max(1, fan_in) ** 0.5)


class SharedValues:
    """Random N(0, 1/fan_in) values, one buffer per fan-in, that every weight matrix with that
    fan-in is a view of: a full-size SDXL + ControlNet + IP-Adapter Plus then holds 2-3 GB
    instead of about 18 GB in float32 (the CPU proof's dtype on a CPU without fast bfloat16).
    The same shapes and the same operations, so it runs what a GPU runs; only the figures mean
    nothing (weights that share memory stay in the CPU's caches), and the CPU proof has none."""

    def __init__(self, device: str, dtype: torch.dtype, gen: torch.Generator) -> None:
        self.device, self.dtype, self.gen = device, dtype, gen
        self.values: dict[int, torch.Tensor] = {}

    def view(self, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        size = math.prod(shape)
        values = self.values.get(fan_in)
        if values is None or values.numel() < size:  # grow (at least double): few buffers
            grown = max(size, 2 * values.numel()) if values is not None else size
            values = (torch.randn(grown, generator=self.gen, device=self.device)
                      * max(1, fan_in) ** -0.5).to(self.dtype)
            self.values[fan_in] = values
        return values[:size].view(shape)


def _drawer(device: str, dtype: torch.dtype, gen: torch.Generator,
            shared: bool) -> tiny_upscale.Draw:
    """Where weight matrices come from: views of :class:`SharedValues`, or tensors of their
    own filled from one pool of random values."""
    if shared:
        return SharedValues(device, dtype, gen).view
    pool = _pool(device, dtype, gen)

    def draw(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        out = torch.empty(shape, device=device, dtype=dtype)
        _fill(out, pool, gen, fan_in)
        return out

    return draw


def _materialise(model: Any, device: str, dtype: torch.dtype, draw: tiny_upscale.Draw) -> Any:
    """Give ``model`` (built on the meta device) real tensors: weight matrices from ``draw``
    (~ N(0, 1/fan_in), so activations stay finite in fp16), norm scales 1, biases 0, position
    ids counting up, other buffers 0."""
    for module_name, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if p.dim() > 1:
                value = draw(tuple(p.shape), p[0].numel())
            else:
                value = torch.full(tuple(p.shape), 1.0 if name.endswith("weight") else 0.0,
                                   device=device, dtype=dtype)
            module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            if f"{module_name}.{name}".endswith("position_ids"):
                value = torch.arange(buf.shape[-1], device=device).expand(
                    tuple(buf.shape)).contiguous()
            else:
                value = torch.zeros(tuple(buf.shape), device=device,
                                    dtype=dtype if buf.is_floating_point() else buf.dtype)
            module._buffers[name] = value
    return model.eval()


def build_components(device: str = "cpu", dtype: torch.dtype = torch.float16,
                     seed: int = 0, shared: bool = False) -> dict[str, Any]:
    """Every component of ``StableDiffusionXLControlNetImg2ImgPipeline`` at full size; with
    ``shared``, weight matrices share their values (:class:`SharedValues`)."""
    gen = torch.Generator(device).manual_seed(seed)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config("unet"))
        controlnet = ControlNetModel(**config("controlnet"))
        vae = AutoencoderKL(**config("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=1, vocab_size=1000, projection_dim=768,
            bos_token_id=0, eos_token_id=2, pad_token_id=1))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
            num_hidden_layers=1, vocab_size=1000, projection_dim=1280,
            bos_token_id=0, eos_token_id=2, pad_token_id=1))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config("image_encoder")))
    draw = _drawer(device, dtype, gen, shared)
    parts: dict[str, Any] = {name: _materialise(model, device, dtype, draw) for name, model in (
        ("unet", unet), ("controlnet", controlnet), ("vae", vae),
        ("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2),
        ("image_encoder", image_encoder))}
    tokenizer = tiny_upscale.write_clip_tokenizer(Path(tempfile.mkdtemp(prefix="aat-sdxl-tok-")))
    return {**parts, "tokenizer": tokenizer, "tokenizer_2": tokenizer,
            "scheduler": EulerDiscreteScheduler.from_config(config("scheduler"))}


def ip_adapter_plus_state_dict(unet: Any, image_encoder: Any, seed: int = 1,
                               shared: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The baked IP-Adapter Plus SDXL file's tensors at full size (resampler sizes in
    ``sdxl_configs/ip_adapter_plus.json``), random, on the UNet's device and in its dtype, for
    ``UpscalePipeline.from_components(..., ip_adapter=...)``: diffusers' ``load_ip_adapter``
    converts them as it converts the real file. With ``shared``, tensors of one fan-in share
    their values (:class:`SharedValues`)."""
    device, dtype = unet.device, unet.dtype
    gen = torch.Generator(device).manual_seed(seed)
    draw = _drawer(str(device), dtype, gen, shared)
    sizes = config("ip_adapter_plus")
    return tiny_upscale.ip_adapter_plus_state_dict(
        unet, image_hidden=image_encoder.config.hidden_size, queries=sizes["queries"],
        dim=sizes["dim"], heads=sizes["heads"], draw=draw)


def parameter_count(components: dict[str, Any]) -> dict[str, int]:
    return {name: sum(p.numel() for p in m.parameters())
            for name, m in components.items() if isinstance(m, torch.nn.Module)}
