"""Tiny random Qwen-Image-Edit components, built offline from configs, for CPU tests.

The transformer and the VAE are diffusers' own classes shrunk to a few thousand parameters;
the text encoder is the tiny Qwen2.5-VL of :mod:`workers.tiny.caption` (its tokenizer and a
``Qwen2VLProcessor`` around them, vision input capped small). The pipeline that runs them is
diffusers' real ``QwenImageEditPipeline``; the pixels it draws are noise.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from workers.tiny.caption import build_model, build_tokenizer

Z_DIM = 4


class ImageOnlyProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video half: that half needs torchvision, which the
    CPU test environment lacks (the worker image has it). Images and text behave as upstream."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None) -> None:
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def build_components(seed: int = 0) -> dict[str, Any]:
    """The keyword arguments of ``QwenImageEditPipeline(...)``."""
    tokenizer = build_tokenizer()
    text_encoder = build_model(tokenizer, seed, "qwen2_5_vl")
    image_processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                            min_pixels=28 * 28, max_pixels=56 * 56)
    processor = ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(seed)
    transformer: Any = QwenImageTransformer2DModel(
        patch_size=2, in_channels=Z_DIM * 4, out_channels=Z_DIM, num_layers=2,
        attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=text_encoder.config.text_config.hidden_size,
        axes_dims_rope=(8, 4, 4))
    torch.manual_seed(seed)
    vae: Any = AutoencoderKLQwenImage(base_dim=4, z_dim=Z_DIM, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * Z_DIM,
                                 latents_std=[1.0] * Z_DIM)
    return {"transformer": transformer.eval(), "vae": vae.eval(),
            "text_encoder": text_encoder, "tokenizer": tokenizer, "processor": processor,
            "scheduler": FlowMatchEulerDiscreteScheduler()}
