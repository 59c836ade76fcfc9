"""The caption worker: real pipeline and handler code on a tiny random Qwen3-VL, offline."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from service.core.errors import BackendUnavailable
from workers.caption.pipeline import (
    DEFAULT_INSTRUCTION,
    CaptionPipeline,
    _downscale,
    to_keywords,
)
from workers.tiny import caption as tiny

pytestmark = pytest.mark.slow  # torch: tiny random SDXL/VLM pipelines on the CPU

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipe() -> CaptionPipeline:
    return CaptionPipeline.from_components(tiny.build_components(), device="cpu")


def noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_a_batch_of_tiles_gets_one_keyword_line_each(pipe) -> None:
    tiles = [noise(96, 64, 1), noise(64, 64, 2), noise(128, 96, 3)]
    captions = pipe.caption(tiles, max_new_tokens=12)
    assert len(captions) == 3
    for text in captions:
        keywords = text.split(", ")
        assert text and all(k.strip() == k and k for k in keywords)
        assert len(set(keywords)) == len(keywords)  # each keyword once
    singles = [pipe.caption([t], max_new_tokens=12)[0] for t in tiles]
    # batching (left padding) does not change the answers (first words: float noise may
    # flip a near-tie of the random tiny model later in the sequence)
    assert [c.split()[:2] for c in singles] == [c.split()[:2] for c in captions]


def test_token_cap_is_respected(pipe) -> None:
    [text] = pipe.caption([noise(64, 64, 4)], max_new_tokens=3)
    assert 1 <= len(text.replace(",", " ").split()) <= 3


def test_large_tiles_are_downscaled_to_about_448_px() -> None:
    small = _downscale(noise(1024, 512, 5))
    assert small.size == (448, 224)
    assert _downscale(noise(300, 200, 6)).size == (300, 200)


@pytest.mark.parametrize(("raw", "clean"), [
    ("Here are the keywords: stone wall, Moss, stone wall, , ,, wooden door.",
     "stone wall, moss, wooden door"),
    ("**Keywords:**\n- tree\n- tree\n- red roof", "tree, red roof"),
    ("1. sky\n2) cloud; sky | lamp", "sky, cloud, lamp"),
    ("", ""),
])
def test_answers_are_cleaned_into_keyword_lists(raw: str, clean: str) -> None:
    assert to_keywords(raw) == clean


def test_keyword_list_is_capped() -> None:
    assert to_keywords(", ".join(f"kw{i}" for i in range(40))).count(",") == 14


def test_out_of_memory_is_retryable(pipe) -> None:
    def explode(*_a: object, **_k: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    hook = pipe.model.model.visual.register_forward_pre_hook(explode)
    try:
        with pytest.raises(BackendUnavailable) as info:
            pipe.caption([noise(64, 64, 7)])
    finally:
        hook.remove()
    assert info.value.code == "gpu_out_of_memory" and info.value.retryable


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def handler():
    mp = pytest.MonkeyPatch()
    mp.setenv("AAT_WORKER_TINY", "1")
    from workers.caption import handler as module

    module.pipeline.reset()
    yield module
    module.pipeline.reset()
    mp.undo()


def test_handler_captions_each_tile_by_id(handler) -> None:
    out = handler.handler({"id": "j", "input": {
        "action": "caption", "max_new_tokens": 8,
        "tiles": [{"tile_id": "0_0", "image": {"b64": png_b64(noise(64, 64, 8))}},
                  {"tile_id": "0_1", "image": {"b64": png_b64(noise(80, 64, 9))}}]}})
    assert [c["tile_id"] for c in out["captions"]] == ["0_0", "0_1"]
    assert all(c["caption"] for c in out["captions"])


@pytest.mark.parametrize(("payload", "code"), [
    ({"action": "caption", "tiles": []}, "invalid_params"),
    ({"action": "upscale"}, "unknown_action"),  # routed to the wrong worker
    ({"action": "caption", "tiles": [{"tile_id": "a", "image": {"b64": "bm90IGFuIGltYWdl"}}]},
     "image_corrupt"),
    ({"action": "caption", "system_prompt": "x",
      "tiles": [{"tile_id": "a", "image": {"b64": "x"}}]}, "invalid_params"),
])
def test_handler_bad_requests(handler, payload: dict, code: str) -> None:
    out = handler.handler({"id": "j", "input": payload})
    err = json.loads(out["error"])
    assert err["code"] == code and err["retryable"] is False


def test_runs_under_the_runpod_sdk_test_mode(tmp_path: Path) -> None:
    env = {**os.environ, "AAT_WORKER_TINY": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    run = subprocess.run([sys.executable, str(ROOT / "workers/caption/handler.py")],
                         cwd=ROOT / "workers/caption", env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "'captions'" in run.stdout + run.stderr


def test_run_on_sentences_are_cut_to_short_keywords() -> None:
    assert to_keywords("a very long sentence that never ends at all, moss") == (
        "a very long sentence that, moss")


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_image_patches_get_2d_rotary_positions(family: str) -> None:
    """Qwen VL places each merged image patch at (row, column) of its grid in the multimodal
    rotary positions; without ``mm_token_type_ids`` transformers silently numbers the patches
    like text (one running index), and captions get worse on a real model."""
    captioner = CaptionPipeline.from_components(tiny.build_components(family=family))
    seen: dict[str, torch.Tensor] = {}

    def grab(name: str):
        def hook(_module: object, _args: object, kwargs: dict) -> None:
            seen.setdefault(name, kwargs[name])  # the prefill call holds the whole prompt
        return hook

    model = captioner.model.model
    hooks = [model.register_forward_pre_hook(grab("input_ids"), with_kwargs=True),
             model.language_model.register_forward_pre_hook(grab("position_ids"),
                                                             with_kwargs=True)]
    try:
        side = 2 * tiny.PATCH[family]  # one merged patch
        captioner.caption([noise(4 * side, 2 * side, 10)], max_new_tokens=2)  # 2 x 4 patches
    finally:
        for hook in hooks:
            hook.remove()
    positions = seen["position_ids"][-3:, 0]  # (temporal, row, column) per prompt token
    image = seen["input_ids"][0] == captioner.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rows, cols = positions[1][image], positions[2][image]
    assert (rows - rows.min()).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (cols - cols.min()).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_instruction_example_shows_the_format_without_content_words() -> None:
    """Models copy example keywords into answers on flat tiles; the example must hold none."""
    example = DEFAULT_INSTRUCTION.rsplit(":", 1)[1]
    assert set(example.replace(",", " ").split()) == {"keyword"}
    for word in ("stone", "wall", "door", "moss", "lantern", "path"):
        assert word not in DEFAULT_INSTRUCTION.lower()


@pytest.mark.parametrize(("raw", "cut", "clean"), [
    ("stone wall, moss, wooden do", True, "stone wall, moss"),
    ("stone wall, moss, wooden door", False, "stone wall, moss, wooden door"),
    ("stone wall, moss,", True, "stone wall, moss"),  # cut right after a separator: all whole
    ("a long run on sentence", True, "a long run on sentence"),  # the only keyword stays
])
def test_a_keyword_cut_by_the_token_cap_is_dropped(raw: str, cut: bool, clean: str) -> None:
    assert to_keywords(raw, cut_off=cut) == clean


def test_answers_that_hit_the_token_cap_lose_their_last_keyword() -> None:
    pipe = CaptionPipeline.from_components(tiny.build_components(seed=1))  # answers with a comma
    tile = noise(64, 64, 1)
    [(raw, cut)] = pipe._generate([tile], DEFAULT_INSTRUCTION, 16)
    assert cut  # the tiny model never ends on its own
    keywords = [k.strip() for k in raw.split(",") if k.strip()]
    assert len(keywords) >= 2, raw
    caption = pipe.caption([tile], max_new_tokens=16)[0]
    assert caption == to_keywords(raw, cut_off=True)
    assert caption.split(", ")[-1] == keywords[-2].lower() != keywords[-1].lower()
