"""Golden tests: our worker pipeline against diffusers' own SDXL pipelines on the same tiny
random components and seed.

Our code encodes prompts itself (75-token chunks, no cut at 77, CLIP skip with embeddings)
and wraps ``StableDiffusionXLControlNetImg2ImgPipeline``; diffusers' ``encode_prompt`` and
``__call__`` with plain text are the reference. Where they meet (prompts of at most 75 tokens)
the numbers must agree; beyond that each 77-token window of ours must be exactly what
diffusers computes for that window's text.

Deliberate differences, each pinned by a test below:
- ``clip_skip`` counts as users know it (A1111's "clip skip 2" = SDXL's default penultimate
  layer); diffusers counts extra layers skipped, so our ``k`` is diffusers' ``k - 1``.
- diffusers applies ``clip_skip`` to the positive prompt only and always encodes the negative
  prompt from the penultimate layer; we apply it to both (as A1111 and ComfyUI do).
- An empty negative prompt is zeros (SDXL's ``force_zeros_for_empty_prompt``): diffusers does
  that for ``negative_prompt=None``, and encodes ``""`` as text.
- Tile sides are padded to a multiple of 64 by repeating edge pixels and cropped back;
  diffusers would resize. Tiles already a multiple of 64 (1024 in production) are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from PIL import Image

from tests.workers.diffusers_reference import styled_reference
from workers.tiny import upscale as tiny
from workers.upscale.pipeline import CHUNK, RefineSettings, TileJob, UpscalePipeline

WORDS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


@pytest.fixture(scope="module")
def comps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny.build_components(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def ours(comps: dict[str, Any]) -> UpscalePipeline:
    return UpscalePipeline.from_components(comps)


@pytest.fixture(scope="module")
def sdxl(comps: dict[str, Any]) -> Any:
    """diffusers' text-to-image SDXL pipeline on the same text encoders and tokenizers."""
    return StableDiffusionXLPipeline(
        vae=comps["vae"], text_encoder=comps["text_encoder"],
        text_encoder_2=comps["text_encoder_2"], tokenizer=comps["tokenizer"],
        tokenizer_2=comps["tokenizer_2"], unet=comps["unet"], scheduler=comps["scheduler"],
        add_watermarker=False)


@pytest.fixture(scope="module")
def reference(comps: dict[str, Any]) -> Any:
    """diffusers' ControlNet img2img pipeline built from the very same modules."""
    ref: Any = StableDiffusionXLControlNetImg2ImgPipeline(
        **{k: v for k, v in comps.items() if k != "image_encoder"}, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.fixture(scope="module")
def tile() -> Image.Image:
    rng = np.random.default_rng(11)
    grad = np.linspace(0, 255, 64)[None, :, None].repeat(64, 0).repeat(3, 2)
    return Image.fromarray(np.clip(grad + rng.normal(0, 25, (64, 64, 3)), 0, 255)
                           .astype(np.uint8))


def diffusers_embeds(sdxl: Any, prompt: str, negative: str | None = None,
                     clip_skip: int | None = None) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return sdxl.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True,
                                  negative_prompt=negative, clip_skip=clip_skip)


def words(n: int, offset: int = 0) -> list[str]:
    """``n`` one-letter words: one token each, so 75-token windows fall between words."""
    return [WORDS[(i * 7 + offset) % len(WORDS)] for i in range(n)]


# ---- (a) prompt encoding ----------------------------------------------------------------------


@pytest.mark.parametrize("negative", ["blurry, jpeg artifacts", ""])
def test_short_prompt_encodes_as_diffusers_encode_prompt(ours, sdxl, negative) -> None:
    pos, pooled, neg, neg_pooled = ours.encode_prompts(["red door, stone stairs"], negative, 2)
    ref, ref_neg, ref_pooled, ref_neg_pooled = diffusers_embeds(
        sdxl, "red door, stone stairs", negative or None)
    assert pos.shape == ref.shape == (1, 77, 64)  # both encoders' 32 features side by side
    torch.testing.assert_close(pos, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(neg, ref_neg, rtol=0, atol=1e-5)
    torch.testing.assert_close(neg_pooled, ref_neg_pooled, rtol=0, atol=1e-5)
    if not negative:
        assert not neg.any() and not neg_pooled.any()


@pytest.mark.parametrize("n_tokens", [75, 76, 150, 300])
def test_long_prompt_windows_each_equal_diffusers_on_that_window(ours, sdxl, n_tokens) -> None:
    """A long prompt is cut into 75-token windows, each encoded as BOS + window + EOS: every
    window equals diffusers' encoding of that window's own text, and nothing is dropped."""
    prompt_words = words(n_tokens)
    assert len(ours.pipe.tokenizer(" ".join(prompt_words), add_special_tokens=False)
               .input_ids) == n_tokens
    pos, pooled, neg, _ = ours.encode_prompts([" ".join(prompt_words)], "ugly", 2)
    n_windows = -(-n_tokens // CHUNK)
    assert pos.shape == neg.shape == (1, n_windows * 77, 64)
    for i in range(n_windows):
        window = " ".join(prompt_words[i * CHUNK:(i + 1) * CHUNK])
        ref, ref_neg, ref_pooled, _ = diffusers_embeds(sdxl, window, "ugly")
        torch.testing.assert_close(pos[:, i * 77:(i + 1) * 77], ref, rtol=0, atol=1e-5)
        if i == 0:  # pooled text comes from the first window (diffusers: the truncated prompt)
            torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=1e-5)
            torch.testing.assert_close(neg[:, :77], ref_neg, rtol=0, atol=1e-5)
    # what diffusers alone would do with the whole prompt: only the first window survives
    whole, _, _, _ = diffusers_embeds(sdxl, " ".join(prompt_words), "ugly")
    torch.testing.assert_close(pos[:, :77], whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("clip_skip", [2, 3, 4])
def test_clip_skip_is_diffusers_clip_skip_minus_one(ours, sdxl, clip_skip) -> None:
    """Users' "clip skip 2" is SDXL's default; ours ``k`` is diffusers' ``k - 1`` extra layers.
    diffusers encodes the negative prompt from the penultimate layer whatever ``clip_skip``
    says; we skip the same layers for both (A1111's behaviour)."""
    pos, pooled, neg, _ = ours.encode_prompts(["castle gate"], "blurry", clip_skip)
    ref, ref_neg, ref_pooled, _ = diffusers_embeds(sdxl, "castle gate", "blurry",
                                                   clip_skip - 2 if clip_skip > 2 else None)
    torch.testing.assert_close(pos, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=1e-5)
    same_layers, _, _, _ = diffusers_embeds(sdxl, "blurry", None,
                                            clip_skip - 2 if clip_skip > 2 else None)
    torch.testing.assert_close(neg, same_layers, rtol=0, atol=1e-5)
    if clip_skip > 2:  # the deliberate difference: diffusers' negative ignores clip_skip
        assert not torch.allclose(neg, ref_neg, atol=1e-3)


# ---- (b) the whole refine call ----------------------------------------------------------------


def refine(ours: UpscalePipeline, tiles: list[TileJob], **settings: Any) -> list[np.ndarray]:
    out = ours.refine(tiles, RefineSettings(**settings))
    return [np.asarray(im, np.int16) for im in out]


def call_reference(reference: Any, scheduler: Any, tiles: list[TileJob], *, prompt: str,
                   negative: str, strength: float, steps: int, cfg: float,
                   control: float) -> list[np.ndarray]:
    reference.scheduler = scheduler
    images = [t.image for t in tiles]
    with torch.inference_mode():
        out = reference(
            prompt=[", ".join(p for p in (prompt, t.prompt) if p) for t in tiles],
            negative_prompt=[negative] * len(tiles) if negative else None,
            image=images, control_image=images, strength=strength, num_inference_steps=steps,
            guidance_scale=cfg, controlnet_conditioning_scale=control,
            generator=[torch.Generator("cpu").manual_seed(t.seed) for t in tiles],
        ).images
    return [np.asarray(im, np.int16) for im in out]


CASES = [
    # scheduler, diffusers scheduler, strength, steps, cfg, controlnet scale, negative
    ("euler", lambda c: EulerDiscreteScheduler.from_config(c), 0.5, 4, 5.0, 1.0, ""),
    ("dpmpp_2m_karras",
     lambda c: DPMSolverMultistepScheduler.from_config(c, algorithm_type="dpmsolver++",
                                                       use_karras_sigmas=True),
     0.35, 8, 7.0, 0.6, "blurry"),
    ("euler", lambda c: EulerDiscreteScheduler.from_config(c), 0.75, 4, 1.0, 1.5, "noise"),
]


@pytest.mark.parametrize("case", CASES, ids=["euler-cfg5", "dpmpp-2m-karras", "euler-no-cfg"])
def test_refine_equals_diffusers_controlnet_img2img_call(ours, reference, comps, tile,
                                                          case) -> None:
    """Same components, seed, strength, steps, CFG and ControlNet scale: the same pixels."""
    name, make_scheduler, strength, steps, cfg, control, negative = case
    tiles = [TileJob("0_0", tile, "mossy", 5)]
    got = refine(ours, tiles, prompt="stone wall", negative_prompt=negative, scheduler=name,
                 strength=strength, steps=steps, cfg_scale=cfg, controlnet_scale=control)
    want = call_reference(reference, make_scheduler(comps["scheduler"].config), tiles,
                          prompt="stone wall", negative=negative, strength=strength,
                          steps=steps, cfg=cfg, control=control)
    # bit-identical here; one level allows another CPU's BLAS to round a batched matmul apart
    assert np.abs(got[0] - want[0]).max() <= 1
    assert np.abs(got[0] - np.asarray(tile, np.int16)).mean() > 1.0  # it did refine the tile


def test_batched_tiles_with_their_own_seeds_and_prompts_equal_diffusers(ours, reference, comps,
                                                                         tile) -> None:
    tiles = [TileJob("a", tile, "red roof", 1),
             TileJob("b", tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "", 2)]
    got = refine(ours, tiles, prompt="village", scheduler="euler", strength=0.5, steps=4,
                 cfg_scale=5.0, controlnet_scale=1.0, batch_size=2)
    want = call_reference(reference, EulerDiscreteScheduler.from_config(comps["scheduler"].config),
                          tiles, prompt="village", negative="", strength=0.5, steps=4, cfg=5.0,
                          control=1.0)
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w).max() <= 1
    assert np.abs(got[0] - got[1]).mean() > 1.0


def test_refine_with_a_style_image_equals_diffusers_with_ip_adapter(tmp_path: Path,
                                                                     tile) -> None:
    """The tiny worker (the emulated worker's and the local backend's, IP-Adapter Plus loaded
    through diffusers' ``load_ip_adapter`` as in the image): our call with a style image and
    scale equals diffusers' call with ``ip_adapter_image`` and ``set_ip_adapter_scale``."""
    styled = tiny.build_pipeline(workdir=tmp_path)
    [proj] = styled.pipe.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(proj, IPAdapterPlusImageProjection)  # the kind the image bakes
    style = Image.new("RGB", (96, 96), (230, 40, 20))
    tiles = [TileJob("0_0", tile, "", 3)]
    got = refine(styled, tiles, prompt="brick", scheduler="euler", strength=0.5, steps=4,
                 cfg_scale=5.0, controlnet_scale=1.0, ip_adapter_image=style,
                 ip_adapter_scale=0.7)
    want = styled_reference(styled, tile, prompt="brick", style=style, scale=0.7, strength=0.5,
                            steps=4, cfg=5.0, controlnet_scale=1.0, seed=3)
    assert np.abs(got[0] - want).max() <= 1
    unstyled = refine(styled, tiles, prompt="brick", scheduler="euler", strength=0.5, steps=4,
                      cfg_scale=5.0, controlnet_scale=1.0)
    assert np.abs(got[0] - unstyled[0]).mean() > 1.0  # the style image did change the tile
