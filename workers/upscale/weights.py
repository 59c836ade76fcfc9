"""The upscale worker's weight manifest; ``python -m workers.upscale.weights`` bakes it in.

``pipeline.UpscalePipeline.from_weights`` loads exactly these components from the same folders.
Revisions are pinned per component; change one here and rebuild the image.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from workers.common.hub import Component, download, weights_root
from workers.common.hub import local_path as _local_path

BASE_FILE = "Illustrious-XL-v2.0.safetensors"
IP_ADAPTER_SUBFOLDER = "sdxl_models"
IP_ADAPTER_FILE = "ip-adapter-plus_sdxl_vit-h.safetensors"
IP_ADAPTER_ENCODER = "models/image_encoder"

MANIFEST: dict[str, Component] = {
    # single-file SDXL checkpoint (Illustrious-XL v2.0)
    "base": Component("OnomaAIResearch/Illustrious-XL-v2.0", "main", (BASE_FILE,), "base"),
    # diffusers configs and tokenizers of SDXL, so from_single_file needs no network
    "sdxl_config": Component(
        "stabilityai/stable-diffusion-xl-base-1.0", "main",
        ("model_index.json", "*/config.json", "scheduler/*.json", "tokenizer*/*"),
        "sdxl-config"),
    "controlnet": Component("xinsir/controlnet-tile-sdxl-1.0", "main",
                            ("config.json", "diffusion_pytorch_model.safetensors"),
                            "controlnet-tile"),
    # fp16-safe VAE: no NaNs and no fp32 upcast in half precision
    "vae": Component("madebyollin/sdxl-vae-fp16-fix", "main",
                     ("config.json", "diffusion_pytorch_model.safetensors"), "vae-fp16-fix"),
    "ip_adapter": Component(
        "h94/IP-Adapter", "main",
        (f"{IP_ADAPTER_SUBFOLDER}/{IP_ADAPTER_FILE}", f"{IP_ADAPTER_ENCODER}/config.json",
         f"{IP_ADAPTER_ENCODER}/model.safetensors"),
        "ip-adapter"),
}
UPSCALE_COMPONENTS = tuple(MANIFEST)


def local_path(name: str, root: Path | None = None) -> Path:
    return _local_path(MANIFEST, name, root)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else weights_root()
    logging.info("wrote %s", download(MANIFEST, target))
