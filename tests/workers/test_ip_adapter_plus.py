"""IP-Adapter Plus (the resampler kind the worker image bakes) through the real loading path.

A tiny random IP-Adapter Plus file in the original checkpoints' key layout and a tiny CLIP
vision encoder are saved where ``workers.upscale.weights`` bakes them; ``from_weights`` loads
them with diffusers' ``load_ip_adapter`` (which converts the resampler keys). The style image
must change the tile, scale 0 must not, and the per-block style option must reach one block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from PIL import Image
from safetensors import safe_open

from tests.workers.diffusers_reference import styled_reference
from workers.tiny import upscale as tiny
from workers.upscale import weights
from workers.upscale.pipeline import RefineSettings, TileJob, UpscalePipeline

BASE = RefineSettings(prompt="stone wall", steps=4, strength=0.6, scheduler="euler",
                      cfg_scale=5.0, controlnet_scale=0.5)
RED = Image.new("RGB", (96, 96), (235, 30, 20))


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    work = tmp_path_factory.mktemp("ip-plus")
    comps = tiny.build_components(work / "parts")
    plus = tiny.ip_adapter_plus_state_dict(comps["unet"])
    return tiny.save_weights_layout(comps, work / "models", plus), plus


@pytest.fixture(scope="module")
def loaded(baked) -> UpscalePipeline:
    root, _ = baked
    return UpscalePipeline.from_weights(root, device="cpu")


@pytest.fixture(scope="module")
def tile() -> Image.Image:
    rng = np.random.default_rng(5)
    grad = np.linspace(40, 220, 64)[:, None, None].repeat(64, 1).repeat(3, 2)
    return Image.fromarray(np.clip(grad + rng.normal(0, 20, (64, 64, 3)), 0, 255)
                           .astype(np.uint8))


def run(pipe: UpscalePipeline, tile: Image.Image, **changes: Any) -> np.ndarray:
    [out] = pipe.refine([TileJob("0_0", tile, "", 9)], BASE.model_copy(update=changes))
    return np.asarray(out, np.int16)


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_the_baked_file_has_the_original_plus_layout(baked) -> None:
    root, _ = baked
    folder = weights.local_path("ip_adapter", root)
    with safe_open(str(folder / weights.IP_ADAPTER_SUBFOLDER / weights.IP_ADAPTER_FILE),
                   "pt") as f:
        keys = set(f.keys())
    assert {"image_proj.latents", "image_proj.proj_in.weight", "image_proj.layers.3.0.to_kv.weight",
            "image_proj.layers.0.1.3.weight", "ip_adapter.1.to_k_ip.weight"} <= keys
    assert (folder / weights.IP_ADAPTER_ENCODER / "config.json").is_file()


def test_load_ip_adapter_converts_the_resampler(loaded, baked) -> None:
    _, plus = baked
    assert loaded.has_ip_adapter
    [proj] = loaded.pipe.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(proj, IPAdapterPlusImageProjection)
    src = plus["image_proj"]
    assert torch.equal(proj.latents.detach(), src["latents"])
    to_k, to_v = src["layers.0.0.to_kv.weight"].chunk(2)  # one fused tensor becomes two
    assert torch.equal(proj.layers[0].attn.to_k.weight.detach(), to_k)
    assert torch.equal(proj.layers[0].attn.to_v.weight.detach(), to_v)
    processors = [p for n, p in loaded.pipe.unet.attn_processors.items() if "attn2" in n]
    assert processors and all(p.num_tokens == [4] for p in processors)  # 4 resampler queries


def test_the_style_image_changes_the_tile_through_patch_features(loaded, tile) -> None:
    calls: list[dict[str, Any]] = []
    hook = loaded.pipe.image_encoder.register_forward_hook(
        lambda _m, _a, kwargs, _out: calls.append(kwargs), with_kwargs=True)
    try:
        plain = run(loaded, tile)
        red = run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.9)
    finally:
        hook.remove()
    # Plus reads the encoder's penultimate hidden states (patches), not the pooled embedding
    assert calls and all(c.get("output_hidden_states") for c in calls)
    assert differs(plain, red) > 1.0
    blue = run(loaded, tile, ip_adapter_image=Image.new("RGB", (96, 96), (20, 40, 235)),
               ip_adapter_scale=0.9)
    assert differs(red, blue) > 0.2  # what the style image shows matters, not only that it is there
    assert differs(plain, run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.0)) == 0.0
    assert differs(red, run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.9)) == 0.0


def test_style_mode_scales_one_block_only(loaded, tile) -> None:
    full = run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.9)
    style = run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.9,
                ip_adapter_mode="style")
    scales = {name.split(".transformer_blocks")[0]: proc.scale
              for name, proc in loaded.pipe.unet.attn_processors.items()
              if name.endswith("attn2.processor")}
    assert {block for block, s in scales.items() if any(v > 0 for v in s)} == {
        "up_blocks.0.attentions.1"}
    assert scales["up_blocks.0.attentions.1"] == [0.9]
    plain = run(loaded, tile)
    assert differs(style, full) > 0.5  # the other blocks no longer see the style image
    assert differs(style, plain) > 0.1  # the style block still does
    # the next request without style mode gets the scale everywhere again
    assert differs(full, run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.9)) == 0.0


def test_a_styled_refine_equals_diffusers_own_call_with_the_plus_adapter(loaded, tile) -> None:
    """Golden: our call with a style image equals diffusers' ``__call__`` with text prompts,
    ``ip_adapter_image`` and the same scale, seed, strength, steps, CFG and ControlNet scale."""
    ours = run(loaded, tile, ip_adapter_image=RED, ip_adapter_scale=0.8)
    theirs = styled_reference(loaded, tile, prompt="stone wall", style=RED, scale=0.8,
                              strength=0.6, steps=4, cfg=5.0, controlnet_scale=0.5, seed=9)
    assert np.abs(ours - theirs).max() <= 1


def test_the_image_encoder_runs_once_per_style_image_not_once_per_tile(loaded, tile) -> None:
    """The ViT-H image encoder is the costliest part of a small tile's call: each distinct
    style image (and the blank one used without a style image) is encoded once, then reused
    by every tile and call, with and without CFG, giving what diffusers' own encoding gives."""
    green = Image.new("RGB", (80, 80), (30, 200, 60))
    runs: list[int] = []
    hook = loaded.pipe.image_encoder.register_forward_hook(lambda *_: runs.append(1))
    loaded._image_embeds.clear()
    try:
        styled = BASE.model_copy(update={"ip_adapter_image": green, "ip_adapter_scale": 0.8})
        tiles = [TileJob(f"0_{i}", tile, "", 9 + i) for i in range(3)]
        first = loaded.refine(tiles, styled)
        assert len(runs) == 2  # the image and the negative side's zero image, once
        again = loaded.refine(tiles, styled)
        loaded.refine(tiles, styled.model_copy(update={"batch_size": 3}))
        assert len(runs) == 2
        assert [np.asarray(a).tolist() for a in first] == [np.asarray(b).tolist() for b in again]
        run(loaded, tile)
        run(loaded, tile)
        assert len(runs) == 4  # the blank image, once
        no_cfg = run(loaded, tile, ip_adapter_image=green, ip_adapter_scale=0.8, cfg_scale=1.0)
        assert len(runs) == 4
    finally:
        hook.remove()
    theirs = styled_reference(loaded, tile, prompt="stone wall", style=green, scale=0.8,
                              strength=0.6, steps=4, cfg=1.0, controlnet_scale=0.5, seed=9)
    assert np.abs(no_cfg - theirs).max() <= 1
