"""Tile captioner: a Qwen VL model answers with short comma-separated content keywords.

Read top to bottom: load once (model id from the manifest in ``weights.py``, configurable),
downscale tiles to ~448 px (≈200 image tokens instead of ≈1,000 at 1024 px), build the Qwen
chat prompt with one ``<|image_pad|>`` per merged patch, generate a whole batch greedily with a
token cap and a mild repetition penalty, then clean the answers into keyword lists usable as
diffusion prompts (no preamble, no markdown, each keyword once, at most ``MAX_KEYWORDS``).

The tokenizer and image processor are used directly rather than the combined processor, so the
same code runs with the real Qwen3-VL/Qwen2.5-VL files and with the offline tiny parts. What the
combined processor adds, ``mm_token_type_ids`` (0 text, 1 image, 2 video per token), is built
here from the model's own token ids and passed to ``generate``: transformers lays image patches
out on their 2-D grid in the multimodal rotary positions only when it is given; without it every
patch gets a 1-D text position (no error, just worse captions).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

from service.core.errors import AatError, BackendUnavailable
from workers.caption import weights

log = logging.getLogger(__name__)

MAX_SIDE = 448
MAX_KEYWORDS = 15
MAX_WORDS = 5  # per keyword
REPETITION_PENALTY = 1.05  # the seed's 1.5 produced degenerate punctuation
# The example shows the format only: on flat or ambiguous tiles models copy example keywords
# ("stone wall, moss") into the answer, and those words then steer the diffusion.
DEFAULT_INSTRUCTION = (
    "List the visible content of this image tile: objects, materials, elements and "
    "composition. Do not describe style or quality. Answer with one line of 8 to 15 "
    "comma-separated keywords, each keyword once, no sentences, no preamble, no markdown. "
    "Format: keyword, keyword, keyword"
)
_PREAMBLE = re.compile(r"^\s*(here (is|are)|sure|keywords|tags|the image (shows|contains))[^:\n]*:\s*",
                       re.IGNORECASE)


class CaptionPipeline:
    """One resident VLM; ``caption`` is serialised by a lock."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues at the right edge
        self.image_processor = image_processor
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def from_components(cls, components: dict[str, Any], device: str = "cpu") -> CaptionPipeline:
        model = components["model"].to(device).eval()
        return cls(model, components["tokenizer"], components["image_processor"], device)

    @classmethod
    def from_weights(cls, root: Path | None = None, device: str = "cuda") -> CaptionPipeline:
        path = weights.local_path("caption", root)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model: Any = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, local_files_only=True)
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, processor, device)

    def caption(self, images: list[Image.Image], instruction: str | None = None,
                max_new_tokens: int = 48) -> list[str]:
        """One keyword line per image, in order."""
        with self._lock:
            try:
                raw = self._generate([_downscale(im) for im in images],
                                     instruction or DEFAULT_INSTRUCTION, max_new_tokens)
            except AatError:
                raise
            except Exception as exc:
                raise _translate(exc) from exc
        return [to_keywords(text, cut_off=cut) for text, cut in raw]

    def _generate(self, images: list[Image.Image], instruction: str,
                  max_new_tokens: int) -> list[tuple[str, bool]]:
        """Per image: the answer, and whether the token cap cut it off (no end token)."""
        vision = self.image_processor(images=images, return_tensors="pt")
        grid = vision["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2))
        prompts = [_chat_prompt(int(g.prod()) // merge**2, instruction) for g in grid]
        text = self.tokenizer(prompts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=text["input_ids"].to(self.device),
                attention_mask=text["attention_mask"].to(self.device),
                mm_token_type_ids=mm_token_types(text["input_ids"], self.model.config
                                                 ).to(self.device),
                pixel_values=vision["pixel_values"].to(self.device, self.model.dtype),
                image_grid_thw=grid.to(self.device),
                max_new_tokens=max_new_tokens, do_sample=False,
                repetition_penalty=REPETITION_PENALTY,
            )
        new = out[:, text["input_ids"].shape[1]:]
        ends = _end_tokens(self.model.generation_config)
        cut = [len(row) >= max_new_tokens and not any(int(t) in ends for t in row) for row in new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return list(zip(texts, cut, strict=True))

    parked = False

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def park(self) -> None:
        """Move the model to CPU memory and free the GPU's copy (the local backend, when it
        and SDXL do not fit on the card together)."""
        if not self.parked:
            self.model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.parked = True

    def unpark(self) -> None:
        if self.parked:
            self.model.to(self.device)
        self.parked = False

    def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {"model_loaded": True, "device": self.device,
                                "model": getattr(self.model.config, "_name_or_path", "") or None}
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            free, total = torch.cuda.mem_get_info()
            info.update(gpu=torch.cuda.get_device_name(), vram_total_gb=round(total / 1e9, 2),
                        vram_used_gb=round((total - free) / 1e9, 2))
        return info


def mm_token_types(input_ids: torch.Tensor, config: Any) -> torch.Tensor:
    """Per token: 0 text, 1 image patch, 2 video patch (what the Qwen VL processors return)."""
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == config.image_token_id] = 1
    video = getattr(config, "video_token_id", None)
    if video is not None:
        types[input_ids == video] = 2
    return types


def _chat_prompt(image_tokens: int, instruction: str) -> str:
    """Qwen VL chat format: one user turn (image, then instruction), then the answer."""
    image = "<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"
    return f"<|im_start|>user\n{image}{instruction}<|im_end|>\n<|im_start|>assistant\n"


def _downscale(image: Image.Image, max_side: int | None = None) -> Image.Image:
    limit = max_side or int(os.environ.get("AAT_CAPTION_MAX_SIDE", MAX_SIDE))
    img = image.convert("RGB")
    if max(img.size) > limit:
        scale = limit / max(img.size)
        img = img.resize((max(32, round(img.width * scale)), max(32, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return img


def _end_tokens(config: Any) -> set[int]:
    eos = config.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos} if eos is not None else set()


def to_keywords(text: str, limit: int = MAX_KEYWORDS, *, cut_off: bool = False) -> str:
    """Clean a model answer into ``"kw1, kw2, ..."``: no preamble or markdown, no repeats.

    ``cut_off``: the answer ended at the token cap, so its last keyword is probably a word cut
    in half ("wooden do"); it is dropped unless it is the only one.
    """
    text = _PREAMBLE.sub("", re.sub(r"[*#`_\"]", "", text).strip())
    parts = re.split(r"[,;\n|]+|(?<![0-9])\.\s", text)
    if cut_off and sum(1 for p in parts if p.strip()) > 1:
        parts = parts[:-1] if parts[-1].strip() else parts
    seen: set[str] = set()
    out: list[str] = []
    for part in parts:
        kw = re.sub(r"^\s*(\d+[.)]|[-•])\s*", "", part)
        kw = " ".join(kw.split()[:MAX_WORDS]).strip(" .:-'").lower()  # a keyword, not a sentence
        if kw and kw not in seen:
            seen.add(kw)
            out.append(kw)
        if len(out) == limit:
            break
    return ", ".join(out)


def _translate(exc: Exception) -> AatError:
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return BackendUnavailable("the GPU ran out of memory while captioning; it will be retried",
                                  code="gpu_out_of_memory", retryable=True)
    log.exception("caption failed")
    return AatError(f"caption failed: {type(exc).__name__}: {exc}"[:400],
                    code="worker_internal", retryable=True)
