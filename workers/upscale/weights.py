"""The upscale worker's weight manifest; ``python -m workers.upscale.weights`` bakes it in.

``pipeline.UpscalePipeline.from_weights`` loads exactly these components from the same folders.
Every revision is a commit (``workers.common.hub`` refuses branches). The base checkpoint,
the ControlNet and the few-step LoRA of ``quality=fast`` take theirs from
``AAT_BASE_REVISION`` / ``AAT_CONTROLNET_REVISION`` / ``AAT_FAST_LORA_REVISION`` (Docker build
args of the same names): no commit of those repositories could be confirmed from here, so the
first build prints the commit to pin. After download the single-file checkpoint
is converted once into diffusers' fp16 folder layout (``DIFFUSERS_FOLDER``) and the 6.9 GB
single file is dropped, so a cold start loads ready tensors instead of converting.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from workers.common.hub import Component, download, weights_root
from workers.common.hub import local_path as _local_path

BASE_FILE = "Illustrious-XL-v2.0.safetensors"
IP_ADAPTER_SUBFOLDER = "sdxl_models"
IP_ADAPTER_FILE = "ip-adapter-plus_sdxl_vit-h.safetensors"
IP_ADAPTER_ENCODER = "models/image_encoder"
FAST_LORA_FILE = "sdxl_lightning_4step_lora.safetensors"  # quality=fast (openrail++ licence)
DIFFUSERS_FOLDER = "base-diffusers"  # the checkpoint in diffusers fp16 layout, made at build

MANIFEST: dict[str, Component] = {
    # single-file SDXL checkpoint (Illustrious-XL v2.0)
    "base": Component("OnomaAIResearch/Illustrious-XL-v2.0",
                      os.environ.get("AAT_BASE_REVISION", "main"), (BASE_FILE,), "base"),
    # diffusers configs and tokenizers of SDXL, so from_single_file needs no network
    "sdxl_config": Component(
        "stabilityai/stable-diffusion-xl-base-1.0", "91704abbae38a0e1f60d433fb08d7f7d99081d21",
        ("model_index.json", "unet/config.json", "text_encoder/config.json",
         "text_encoder_2/config.json", "vae/config.json", "scheduler/scheduler_config.json",
         "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/vocab.json",
         "tokenizer_2/merges.txt"),
        "sdxl-config", extras=("tokenizer*/*",)),
    "controlnet": Component("xinsir/controlnet-tile-sdxl-1.0",
                            os.environ.get("AAT_CONTROLNET_REVISION", "main"),
                            ("config.json", "diffusion_pytorch_model.safetensors"),
                            "controlnet-tile"),
    # fp16-safe VAE: no NaNs and no fp32 upcast in half precision
    "vae": Component(
        "madebyollin/sdxl-vae-fp16-fix", "6d1073461cd0b5a6ea4fda10b812e3d9d58a8330",
        ("config.json", "diffusion_pytorch_model.safetensors"), "vae-fp16-fix",
        sha256=(("diffusion_pytorch_model.safetensors",
                 "1b909373b28f2137098b0fd9dbc6f97f8410854f31f84ddc9fa04b077b0ace2c"),)),
    "ip_adapter": Component(
        "h94/IP-Adapter", "018e402774aeeddd60609b4ecdb7e298259dc729",
        (f"{IP_ADAPTER_SUBFOLDER}/{IP_ADAPTER_FILE}", f"{IP_ADAPTER_ENCODER}/config.json",
         f"{IP_ADAPTER_ENCODER}/model.safetensors"),
        "ip-adapter",
        sha256=((f"{IP_ADAPTER_SUBFOLDER}/{IP_ADAPTER_FILE}",
                 "3f5062b8400c94b7159665b21ba5c62acdcd7682262743d7f2aefedef00e6581"),)),
}
MANIFEST["fast_lora"] = Component(  # distilled few-step SDXL LoRA for quality=fast
    "ByteDance/SDXL-Lightning", os.environ.get("AAT_FAST_LORA_REVISION", "main"),
    (FAST_LORA_FILE,), "fast-lora")
UPSCALE_COMPONENTS = tuple(MANIFEST)


def local_path(name: str, root: Path | None = None) -> Path:
    return _local_path(MANIFEST, name, root)


def bake_diffusers_layout(root: Path, *, drop_single_file: bool = True) -> Path:
    """Convert the single-file checkpoint into diffusers' fp16 layout (build time, CPU).

    The UNet and both text encoders are kept (the VAE is the fp16-fix one, loaded from its own
    folder); tokenizers and scheduler come from the baked SDXL configs.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline

    base = local_path("base", root)
    out = root / DIFFUSERS_FOLDER
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(base / BASE_FILE), config=str(local_path("sdxl_config", root)),
        dtype=torch.float16, local_files_only=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    del pipe
    if drop_single_file:
        shutil.rmtree(base)  # the lock file keeps its sha256
    return out


if __name__ == "__main__":
    from service.core.logs import configure_logging

    configure_logging("INFO")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else weights_root()
    logging.info("wrote %s", download(MANIFEST, target))
    logging.info("converted the checkpoint into %s", bake_diffusers_layout(target))
