"""The upscale worker's weight manifest; ``python -m workers.upscale.weights`` bakes it in.

``pipeline.UpscalePipeline.from_weights`` loads exactly these components from the same folders.
Revisions are commits where known (the rest are resolved to one commit per build and written to
the lock file; pin them here from a build log). Change one here and rebuild the image.
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
        "stabilityai/stable-diffusion-xl-base-1.0", "91704abbae38a0e1f60d433fb08d7f7d99081d21",
        ("model_index.json", "*/config.json", "scheduler/*.json", "tokenizer*/*"),
        "sdxl-config"),
    "controlnet": Component("xinsir/controlnet-tile-sdxl-1.0", "main",
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
UPSCALE_COMPONENTS = tuple(MANIFEST)


def local_path(name: str, root: Path | None = None) -> Path:
    return _local_path(MANIFEST, name, root)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else weights_root()
    logging.info("wrote %s", download(MANIFEST, target))
