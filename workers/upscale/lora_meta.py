"""What the LoRA list says about each file beyond name and size: its sha256 and trigger words.

Two sources, first wins for trigger words:

1. the sidecar ``<name>.meta.json`` beside the file, written when the file arrived (upload:
   the verified sha256; CivitAI import: also the version's ``trainedWords`` and where it came
   from). A sidecar whose recorded size differs from the file's is stale (someone replaced
   the file by hand) and is ignored.
2. the file's own safetensors metadata (``__metadata__``): ``modelspec.trigger_phrase`` (the
   Stability model-spec key, comma-separated), else the most frequent tags of kohya's
   ``ss_tag_frequency`` (training captions: the activation tag tends to lead).

Headers are read once per (path, size, mtime) and cached; files whose header is over
:data:`MAX_LIST_HEADER` are not read for the list.

Also the one rule of which LoRAs this worker can use (:func:`check_base_model`): the pipeline
is SDXL, so a LoRA trained for another base model (SD 1.5, SD 2.x, SD 3, Flux, ...) is refused,
whether CivitAI's ``baseModel`` says so before the download or the file's own metadata
(``modelspec.architecture``, kohya's ``ss_base_model_version``) says so once it is here. A base
model named by neither, or one this rule does not know, is let through.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from service.core.atomic import atomic_write
from service.core.errors import ParamsError

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".meta.json"
MAX_LIST_HEADER = 16 * 1024 * 1024
MAX_WORDS = 12
MAX_TAG_WORDS = 5  # from kohya's tag frequencies: the leading few
MAX_WORD_CHARS = 200
_cache: dict[tuple[str, int, int], list[str]] = {}
_cache_lock = threading.Lock()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def clean_words(words: Any) -> list[str]:
    """Strings only, trimmed, de-duplicated in order, bounded in count and length."""
    out: list[str] = []
    for word in words if isinstance(words, list) else []:
        if isinstance(word, str):
            text = " ".join(word.split())[:MAX_WORD_CHARS]
            if text and text not in out:
                out.append(text)
    return out[:MAX_WORDS]


def write_sidecar(path: Path, *, size_bytes: int, sha256: str | None,
                  trigger_words: list[str] | None = None,
                  source: dict[str, Any] | None = None) -> None:
    """Record what is known about the LoRA that is (or is about to be renamed) at ``path``.
    Written before the rename, so the list never sees an imported file without it."""
    data: dict[str, Any] = {"size_bytes": size_bytes, "sha256": sha256,
                            "trigger_words": clean_words(trigger_words or [])}
    if source:
        data["source"] = source
    atomic_write(sidecar_path(path), json.dumps(data, indent=1).encode())


def remove_sidecar(path: Path) -> None:
    sidecar_path(path).unlink(missing_ok=True)


def describe(path: Path) -> tuple[str | None, list[str]]:
    """``(sha256, trigger_words)`` of the LoRA at ``path`` for the list."""
    stat = path.stat()
    side = _read_json(sidecar_path(path))
    sha256, words = None, []
    if side is not None and side.get("size_bytes") == stat.st_size:
        sha = side.get("sha256")
        sha256 = sha if isinstance(sha, str) and len(sha) == 64 else None
        words = clean_words(side.get("trigger_words"))
    if not words:
        words = _header_words(path, stat)
    return sha256, words


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _header_words(path: Path, stat: os.stat_result) -> list[str]:
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    words = trigger_words_from_metadata(read_metadata(path))
    with _cache_lock:
        if len(_cache) > 1024:
            _cache.clear()
        _cache[key] = words
    return words


def read_metadata(path: Path, limit: int = MAX_LIST_HEADER) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` if absent, unreadable or too big)."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if not 2 <= size <= limit:
                return {}
            header = json.loads(fh.read(size))
    except (OSError, struct.error, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if isinstance(k, str) and isinstance(v, str)}


def trigger_words_from_metadata(meta: dict[str, str]) -> list[str]:
    """Trigger words a trainer wrote into the file: ``modelspec.trigger_phrase`` first, else
    the :data:`MAX_TAG_WORDS` most frequent tags of ``ss_tag_frequency`` (ties by name)."""
    phrase = meta.get("modelspec.trigger_phrase", "")
    if phrase.strip():
        return clean_words(phrase.split(","))
    try:
        freq = json.loads(meta.get("ss_tag_frequency", "") or "{}")
    except ValueError:
        return []
    counts: Counter[str] = Counter()
    for tags in freq.values() if isinstance(freq, dict) else []:
        for tag, n in tags.items() if isinstance(tags, dict) else []:
            if isinstance(tag, str) and isinstance(n, int) and not isinstance(n, bool):
                counts[tag.strip()] += n
    ranked = sorted((t for t in counts if t), key=lambda t: (-counts[t], t))
    return clean_words(ranked[:MAX_TAG_WORDS])


# ---- which base model a LoRA was made for ---------------------------------------------------

# SDXL and the models fine-tuned from it (CivitAI baseModel names, modelspec architectures,
# kohya's ss_base_model_version values)
_SDXL_FAMILY = re.compile(r"sdxl|stable-diffusion-xl|\bpony|illustrious|noob ?ai", re.I)
# clearly something else: SD 1.x / 2.x / 3.x, Flux and the other non-SDXL architectures
_OTHER_FAMILY = re.compile(
    r"^(sd|stable[ -]diffusion)[ _-]?v?[123](?![0-9])|stable-diffusion-(v[12]|3)|flux|"
    r"cascade|^svd|hunyuan|pixart|kolors|aura ?flow|lumina|\bwan\b|ltxv|mochi|cogvideo|"
    r"hidream|qwen|chroma", re.I)


def file_base_model(meta: dict[str, str]) -> str | None:
    """The base model a safetensors file's own metadata names, if any."""
    for key in ("modelspec.architecture", "ss_base_model_version"):
        value = meta.get(key, "").strip()
        if value:
            return value
    return None


def check_base_model(base_model: str | None, what: str) -> None:
    """Refuse (``lora_incompatible``) a LoRA made for a base model that is clearly not SDXL."""
    label = (base_model or "").strip()
    if not label or _SDXL_FAMILY.search(label) or not _OTHER_FAMILY.search(label):
        return
    raise ParamsError(
        f"{what} is made for {label}, not SDXL; the upscale worker runs SDXL, so it cannot use "
        "it: choose a version made for SDXL (SDXL 1.0, Pony, Illustrious, NoobAI)",
        code="lora_incompatible",
    )
