"""The animate worker's weight manifest; ``python -m workers.animate.weights`` bakes it in.

Qwen-Image-Edit in diffusers' folder layout (transformer, VAE, Qwen2.5-VL text encoder,
tokenizer, processor, scheduler). ``AAT_QWEN_EDIT_MODEL`` picks another edit checkpoint of the
same layout; ``AAT_QWEN_EDIT_REVISION`` (a Docker build arg of the same name) pins its commit:
none could be confirmed from here, so the first build prints the commit to pin.
``pipeline.AnimatePipeline.from_weights`` loads the ``edit`` folder named here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from workers.common.hub import Component, download, weights_root
from workers.common.hub import local_path as _local_path

DEFAULT_MODEL = "Qwen/Qwen-Image-Edit"

MANIFEST: dict[str, Component] = {
    "edit": Component(
        os.environ.get("AAT_QWEN_EDIT_MODEL", DEFAULT_MODEL),
        os.environ.get("AAT_QWEN_EDIT_REVISION", "main"),
        ("model_index.json", "scheduler/scheduler_config.json", "transformer/config.json",
         "transformer/*.safetensors", "vae/config.json", "vae/*.safetensors",
         "text_encoder/config.json", "text_encoder/*.safetensors", "tokenizer/*",
         "processor/*"),
        "qwen-image-edit", extras=("*.json", "*/*.json", "*/*.txt", "*/*.jinja")),
}
ANIMATE_COMPONENTS = tuple(MANIFEST)


def local_path(name: str, root: Path | None = None) -> Path:
    return _local_path(MANIFEST, name, root)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else weights_root()
    logging.info("wrote %s", download(MANIFEST, target))
