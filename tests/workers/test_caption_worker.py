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
from workers.caption.pipeline import CaptionPipeline, _downscale, to_keywords
from workers.tiny import caption as tiny

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

    module._pipeline = None
    yield module
    module._pipeline = None
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
