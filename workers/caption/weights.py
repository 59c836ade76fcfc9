"""The caption worker's weight manifest; ``python -m workers.caption.weights`` bakes it in.

The model is configuration: ``AAT_CAPTION_MODEL`` / ``AAT_CAPTION_REVISION`` (Docker build
args of the same names) pick any Qwen VL instruct model with safetensors weights
(Qwen3-VL-8B by default, pinned to a commit; Qwen3-VL-2B/4B or Qwen2.5-VL-3B/7B for smaller
GPUs, with the commit to pin given as ``AAT_CAPTION_REVISION``: a branch is refused).
``pipeline.CaptionPipeline.from_weights`` loads the ``caption`` folder named here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from workers.common.hub import Component, download, weights_root
from workers.common.hub import local_path as _local_path

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
DEFAULT_REVISION = "0c351dd01ed87e9c1b53cbc748cba10e6187ff3b"  # of DEFAULT_MODEL

MANIFEST: dict[str, Component] = {
    "caption": Component(
        os.environ.get("AAT_CAPTION_MODEL", DEFAULT_MODEL),
        os.environ.get("AAT_CAPTION_REVISION")
        or (DEFAULT_REVISION if os.environ.get("AAT_CAPTION_MODEL", DEFAULT_MODEL)
            == DEFAULT_MODEL else "main"),
        ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
         "*.safetensors"),
        "caption-vlm", extras=("*.json", "*.txt", "*.jinja")),
}
CAPTION_COMPONENTS = tuple(MANIFEST)


def local_path(name: str, root: Path | None = None) -> Path:
    return _local_path(MANIFEST, name, root)


if __name__ == "__main__":
    from service.core.logs import configure_logging

    configure_logging("INFO")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else weights_root()
    logging.info("wrote %s", download(MANIFEST, target))
