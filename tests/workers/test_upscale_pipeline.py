"""The real upscale pipeline code on tiny random SDXL + ControlNet + IP-Adapter + two LoRAs.

Every knob a user sets must change the pixels (the seed product silently ignored ControlNet),
prompts must not be cut at 77 tokens, and out-of-memory must come back as a retryable error.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline
from PIL import Image
from pydantic import ValidationError

from service.core.errors import AatError, NotFound, ParamsError
from service.core.params import LoraSpec, Scheduler
from workers.tiny import upscale as tiny
from workers.upscale.pipeline import (
    SCHEDULERS,
    RefineSettings,
    TileJob,
    UpscalePipeline,
    effective_prompt,
)

pytestmark = pytest.mark.slow  # torch: tiny random SDXL/VLM pipelines on the CPU

BASE = RefineSettings(prompt="stone wall", steps=4, strength=0.5, scheduler="euler",
                      cfg_scale=5.0)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> UpscalePipeline:
    work = tmp_path_factory.mktemp("tiny-sdxl")
    comps = tiny.build_components(work)
    loras = work / "loras"
    tiny.write_lora(comps["unet"], loras / "detail.safetensors", seed=1)
    tiny.write_lora(comps["unet"], loras / "style.safetensors", seed=2)
    return UpscalePipeline.from_components(
        comps, ip_adapter=tiny.ip_adapter_plus_state_dict(comps["unet"]), lora_dir=loras)


@pytest.fixture(scope="module")
def tile() -> Image.Image:
    rng = np.random.default_rng(3)
    grad = np.linspace(0, 255, 64)[None, :, None].repeat(64, 0).repeat(3, 2)
    noise = rng.normal(0, 20, (64, 64, 3))
    return Image.fromarray(np.clip(grad + noise, 0, 255).astype(np.uint8))


def run(pipe: UpscalePipeline, tile: Image.Image, seed: int = 7, prompt: str = "",
        **changes: object) -> np.ndarray:
    settings = RefineSettings(**{**BASE.__dict__, **changes})
    [out] = pipe.refine([TileJob("0_0", tile, prompt, seed)], settings)
    assert out.size == tile.size
    return np.asarray(out, dtype=np.int16)


def lora(name: str, weight: float) -> LoraSpec:
    return LoraSpec(name=name, weight=weight)


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_controlnet_is_built_and_its_scale_changes_the_output(pipe, tile) -> None:
    assert isinstance(pipe.pipe, StableDiffusionXLControlNetImg2ImgPipeline)
    off = run(pipe, tile, controlnet_scale=0.0)
    on = run(pipe, tile, controlnet_scale=1.0)
    assert differs(off, on) > 1.0
    assert differs(on, run(pipe, tile, controlnet_scale=1.0)) == 0.0  # deterministic per seed


def test_stacked_lora_weights_change_the_output_and_unload_cleanly(pipe, tile) -> None:
    plain = run(pipe, tile)
    both = run(pipe, tile, loras=[lora("detail", 1.0), lora("style.safetensors", 0.5)])
    heavier = run(pipe, tile, loras=[lora("detail", 1.0), lora("style.safetensors", 1.5)])
    only_detail = run(pipe, tile, loras=[lora("detail", 1.0)])
    assert differs(plain, both) > 1.0
    assert differs(both, heavier) > 1.0  # the second LoRA's own weight is applied
    assert differs(both, only_detail) > 1.0  # both LoRAs are active at once
    assert differs(plain, run(pipe, tile)) == 0.0  # no LoRA asked: none applied


def test_unknown_lora_is_a_clear_not_found(pipe, tile) -> None:
    with pytest.raises(NotFound) as info:
        run(pipe, tile, loras=[lora("missing", 1.0)])
    assert info.value.code == "lora_not_found"
    assert "detail.safetensors" in info.value.message  # tells what is available


def test_300_token_prompt_is_not_truncated(pipe, tile) -> None:
    head = "w " * 225  # one byte-level token per one-letter word: 225 tokens
    first = head + "ab " * 37 + "z"  # 300 tokens; only tokens 226-300 differ
    second = head + "cd " * 37 + "z"
    assert len(pipe.pipe.tokenizer(first, add_special_tokens=False).input_ids) == 300
    e1, _, neg, _ = pipe.encode_prompts([first], "", 2)
    e2, _, _, _ = pipe.encode_prompts([second], "", 2)
    assert e1.shape[1] == 4 * 77  # 300 tokens: 4 chunks of 75, none dropped
    assert neg.shape == e1.shape
    assert torch.equal(e1[:, :3 * 77], e2[:, :3 * 77])
    assert not torch.equal(e1[:, 3 * 77:], e2[:, 3 * 77:])
    assert differs(run(pipe, tile, prompt=first), run(pipe, tile, prompt=second)) > 0.0


def test_prompt_is_assembled_once_global_then_tile() -> None:
    assert effective_prompt("oil painting", "red door, stairs") == "oil painting, red door, stairs"
    assert effective_prompt("", " red door ") == "red door"


def test_clip_skip_is_applied_with_embeddings(pipe, tile) -> None:
    assert differs(run(pipe, tile, prompt="tree"), run(pipe, tile, prompt="tree", clip_skip=1)) > 0.5


def test_clip_skip_2_is_sdxls_own_encoding(pipe) -> None:
    """Users' "clip skip 2" (A1111, ComfyUI) is SDXL's default penultimate layer: the default
    encodes a prompt exactly as diffusers' own SDXL pipeline does; 1 is the last layer."""
    assert RefineSettings().clip_skip == 2
    ours, ours_pooled, _, _ = pipe.encode_prompts(["red door, stairs"], "blurry", 2)
    theirs, _, theirs_pooled, _ = pipe.pipe.encode_prompt(
        "red door, stairs", device="cpu", do_classifier_free_guidance=True,
        negative_prompt="blurry")
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours_pooled, theirs_pooled, atol=1e-5)
    last, _, _, _ = pipe.encode_prompts(["red door, stairs"], "blurry", 1)
    assert not torch.allclose(last, theirs, atol=1e-3)


def test_style_only_ip_adapter_reaches_one_block(pipe, tile) -> None:
    """InstantStyle: only the style block of the UNet sees the style image, so the style
    image's own objects do not bleed into the tile."""
    style = Image.new("RGB", (96, 96), (250, 10, 10))
    full = run(pipe, tile, ip_adapter_image=style, ip_adapter_scale=0.8)
    styled = run(pipe, tile, ip_adapter_image=style, ip_adapter_scale=0.8,
                 ip_adapter_mode="style")
    scales = {name: proc.scale for name, proc in pipe.pipe.unet.attn_processors.items()
              if hasattr(proc, "scale") and name.endswith("attn2.processor")}
    seeing = {name.split(".transformer_blocks")[0] for name, scale in scales.items()
              if any(s > 0 for s in scale)}
    assert seeing == {"up_blocks.0.attentions.1"}
    assert differs(styled, full) > 0.5 and differs(styled, run(pipe, tile)) > 0.1


def test_ip_adapter_style_image_and_scale(pipe, tile) -> None:
    plain = run(pipe, tile)
    style = Image.new("RGB", (96, 96), (250, 10, 10))
    styled = run(pipe, tile, ip_adapter_image=style, ip_adapter_scale=0.9)
    assert differs(plain, styled) > 1.0
    assert differs(plain, run(pipe, tile, ip_adapter_image=style, ip_adapter_scale=0.0)) == 0.0


def test_per_tile_seeds_batches_and_odd_sizes(pipe, tile) -> None:
    odd = tile.crop((0, 0, 50, 37))
    tiles = [TileJob("a", tile, "", 1), TileJob("b", tile, "", 2), TileJob("c", odd, "", 3)]
    batched = pipe.refine(tiles, RefineSettings(**{**BASE.__dict__, "batch_size": 4}))
    single = pipe.refine(tiles, BASE)
    assert [im.size for im in batched] == [(64, 64), (64, 64), (50, 37)]
    a, b = (np.asarray(im, dtype=np.int16) for im in batched[:2])
    assert differs(a, b) > 1.0  # same pixels in, different seeds: different detail
    for x, y in zip(batched, single, strict=True):
        assert np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max() <= 3


def test_every_scheduler_runs_and_matters(pipe, tile) -> None:
    outs = {name: run(pipe, tile, scheduler=name)
            for name in ("dpmpp_2m_sde_karras", "dpmpp_2m_karras", "euler", "euler_a", "unipc", "ddim")}
    assert differs(outs["euler"], outs["ddim"]) > 0.5
    assert set(SCHEDULERS) == set(get_args(Scheduler))  # the worker runs every declared name
    with pytest.raises(ValidationError, match="scheduler"):
        run(pipe, tile, scheduler="plms")  # refused where the settings are built
    with pytest.raises(ParamsError):  # and by the pipeline, for settings built unvalidated
        pipe.refine([TileJob("0_0", tile, "", 1)], BASE.model_copy(update={"scheduler": "plms"}))


def test_zero_strength_returns_the_tile_untouched(pipe, tile) -> None:
    assert differs(run(pipe, tile, strength=0.0), np.asarray(tile, np.int16)) == 0.0


def oom_on(pipe: UpscalePipeline, when):
    """Make the UNet raise CUDA's out-of-memory error on the calls where ``when(batch)``."""
    def explode(_module: object, args: tuple) -> None:
        if when(args[0].shape[0]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return pipe.pipe.unet.register_forward_pre_hook(explode)


def test_out_of_memory_on_a_batch_is_retried_one_tile_at_a_time(pipe, tile) -> None:
    tiles = [TileJob("a", tile, "", 1), TileJob("b", tile, "", 2)]
    batched = RefineSettings(**{**BASE.__dict__, "batch_size": 2})
    alone = pipe.refine(tiles, BASE)
    hook = oom_on(pipe, lambda rows: rows > 2)  # CFG doubles the rows: 2 tiles = 4 rows
    try:
        out = pipe.refine(tiles, batched)
    finally:
        hook.remove()
    for x, y in zip(out, alone, strict=True):  # the same tiles as refined one by one
        assert differs(np.asarray(x, np.int16), np.asarray(y, np.int16)) == 0.0


def test_a_tile_that_never_fits_is_a_clear_final_failure(pipe, tile) -> None:
    hook = oom_on(pipe, lambda rows: True)
    try:
        with pytest.raises(AatError) as info:
            pipe.refine([TileJob("a", tile, "", 1), TileJob("b", tile, "", 2)],
                        RefineSettings(**{**BASE.__dict__, "batch_size": 2}))
    finally:
        hook.remove()
    assert info.value.code == "gpu_out_of_memory"
    assert not info.value.retryable  # retrying the same tile on the same GPU fails again
    assert "64x64 tile" in info.value.message and "tile_size" in info.value.message
    assert run(pipe, tile).shape == (64, 64, 3)  # the worker keeps serving afterwards


def test_a_bug_is_not_retried(pipe, tile) -> None:
    def bug(*_args: object) -> None:
        raise ValueError("Adapter name(s) {'x'} not in the list of present adapters")

    hook = pipe.pipe.unet.register_forward_pre_hook(bug)
    try:
        with pytest.raises(AatError) as info:
            run(pipe, tile)
    finally:
        hook.remove()
    assert info.value.code == "worker_internal" and not info.value.retryable


def test_controlnet_is_skipped_entirely_at_scale_0(pipe, tile) -> None:
    calls: list[int] = []
    hook = pipe.pipe.controlnet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        skipped = run(pipe, tile, controlnet_scale=0.0)
        assert calls == []  # no ControlNet pass at all
        run(pipe, tile, controlnet_scale=0.5)
        assert len(calls) == 2  # strength 0.5 of 4 steps: one pass per step
    finally:
        hook.remove()
    # the same pixels as diffusers' ControlNet pipeline computing a zero contribution
    embeds, pooled, neg, neg_pooled = pipe.encode_prompts(["stone wall"], "", 2)
    with torch.inference_mode():
        [ref] = pipe.pipe(image=[tile], control_image=[tile], strength=0.5, num_inference_steps=4,
                          guidance_scale=5.0, controlnet_conditioning_scale=0.0,
                          prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                          negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled,
                          ip_adapter_image=Image.new("RGB", (224, 224)),
                          generator=[torch.Generator("cpu").manual_seed(7)]).images
    assert np.abs(skipped - np.asarray(ref, np.int16)).max() <= 2


def test_lora_replaced_on_disk_is_reloaded(pipe, tile, tmp_path: Path) -> None:
    before = run(pipe, tile, loras=[lora("style", 1.0)])
    path = pipe.lora_dir / "style.safetensors"
    original = path.read_bytes()
    try:
        tiny.write_lora(tiny.build_components(tmp_path)["unet"], path, seed=99)
        assert differs(before, run(pipe, tile, loras=[lora("style", 1.0)])) > 0.5
    finally:
        path.write_bytes(original)


def test_least_recently_used_loras_are_unloaded(pipe, tile) -> None:
    pipe.max_loaded_loras = 1
    try:
        run(pipe, tile, loras=[lora("detail", 1.0)])
        alone = run(pipe, tile, loras=[lora("style", 1.0)])
        assert list(pipe._adapters) == ["style.safetensors"]
        loaded = {a for names in pipe.pipe.get_list_adapters().values() for a in names}
        assert len(loaded) == 1
        both = run(pipe, tile, loras=[lora("detail", 1.0), lora("style", 1.0)])  # both still usable
        assert differs(alone, both) > 1.0
    finally:
        pipe.max_loaded_loras = 8


def test_channels_last_speed_option_keeps_the_output(tmp_path: Path, monkeypatch, tile) -> None:
    monkeypatch.setenv("AAT_CHANNELS_LAST", "1")
    comps = tiny.build_components(tmp_path)
    fast = UpscalePipeline.from_components(comps)
    weight = fast.pipe.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    monkeypatch.delenv("AAT_CHANNELS_LAST")
    plain = UpscalePipeline.from_components(tiny.build_components(tmp_path / "b"))
    a = np.asarray(fast.refine([TileJob("0", tile, "", 1)], BASE)[0], np.int16)
    b = np.asarray(plain.refine([TileJob("0", tile, "", 1)], BASE)[0], np.int16)
    assert np.abs(a - b).max() <= 3  # same model, same seed: same pixels up to float noise


@pytest.mark.slow
def test_compiled_unet_serves_and_hot_swaps_lora_requests(tmp_path: Path, monkeypatch,
                                                           tile) -> None:
    """AAT_COMPILE=1 used to wrap the UNet, so every LoRA request failed (retried for nothing).
    The UNet is compiled by the ``eager`` backend: the same graph capture, no C compiler."""
    from diffusers import UNet2DConditionModel

    monkeypatch.setenv("AAT_COMPILE", "1")
    monkeypatch.setenv("AAT_COMPILE_BACKEND", "eager")
    loras = tmp_path / "loras"
    comps = tiny.build_components(tmp_path)
    tiny.write_lora(comps["unet"], loras / "detail.safetensors", seed=1)
    compiled = UpscalePipeline.from_components(comps, lora_dir=loras)
    monkeypatch.delenv("AAT_COMPILE")
    assert isinstance(compiled.pipe.unet, UNet2DConditionModel)  # compiled in place
    assert compiled.compiled

    def fresh(name: str) -> np.ndarray:  # an uncompiled pipeline with only this LoRA
        plain = UpscalePipeline.from_components(tiny.build_components(tmp_path / name),
                                                lora_dir=loras)
        return run(plain, tile, loras=[lora("detail", 1.0)])

    with_lora = run(compiled, tile, loras=[lora("detail", 1.0)])
    assert differs(with_lora, fresh("a")) <= 0.05
    assert differs(with_lora, run(compiled, tile)) > 1.0  # the LoRA is really applied
    tiny.write_lora(tiny.build_components(tmp_path / "x")["unet"], loras / "detail.safetensors",
                    seed=42)  # replaced on the volume: hot-swapped into its adapter
    swapped = run(compiled, tile, loras=[lora("detail", 1.0)])
    assert differs(with_lora, swapped) > 0.5
    assert differs(swapped, fresh("b")) <= 0.05


def test_from_weights_loads_the_baked_layout(tmp_path: Path, tile) -> None:
    """The real loading path (diffusers fp16 layout made at build, ControlNet, fp16-fix VAE,
    IP-Adapter file and encoder) gives the same pixels as the same parts built in memory."""
    comps = tiny.build_components(tmp_path / "parts")
    ip = tiny.ip_adapter_plus_state_dict(comps["unet"])
    root = tiny.save_weights_layout(comps, tmp_path / "models", ip)
    loaded = UpscalePipeline.from_weights(root, device="cpu")
    assert loaded.has_ip_adapter
    built = UpscalePipeline.from_components(tiny.build_components(tmp_path / "again"),
                                            ip_adapter=ip)
    style = Image.new("RGB", (64, 64), (240, 30, 30))
    for changes in ({}, {"ip_adapter_image": style, "ip_adapter_scale": 0.8}):
        assert differs(run(loaded, tile, **changes), run(built, tile, **changes)) < 0.01


def test_fast_quality_runs_four_steps_without_cfg_through_the_baked_lora(tmp_path: Path,
                                                                          tile) -> None:
    comps = tiny.build_components(tmp_path)
    fast_lora = tiny.write_lora(comps["unet"], tmp_path / "fast.safetensors", seed=11)
    fast = UpscalePipeline.from_components(comps, fast_lora=fast_lora)
    rows: list[int] = []
    hook = fast.pipe.unet.register_forward_pre_hook(lambda _m, a: rows.append(a[0].shape[0]))
    try:
        quick = run(fast, tile, quality="fast", strength=0.35)
        assert rows == [1, 1, 1, 1]  # 4 denoising steps, no CFG (one row per tile)
        rows.clear()
        standard = run(fast, tile, strength=0.35, steps=12)
        assert rows == [2, 2, 2, 2]  # the same steps with CFG: twice the UNet work
    finally:
        hook.remove()
    assert differs(quick, standard) > 1.0
    # the few-step LoRA is active only for quality=fast: standard equals a worker without it
    plain = UpscalePipeline.from_components(tiny.build_components(tmp_path / "plain"))
    assert differs(standard, run(plain, tile, strength=0.35, steps=12)) < 0.05
    with pytest.raises(ParamsError) as info:
        run(plain, tile, quality="fast")
    assert info.value.code == "fast_mode_unavailable"


def test_the_controlnet_receives_the_tile_and_the_scale(pipe, tile) -> None:
    seen: list[dict] = []
    hook = pipe.pipe.controlnet.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        run(pipe, tile, controlnet_scale=0.6)
    finally:
        hook.remove()
    assert seen and all(k["conditioning_scale"] == pytest.approx(0.6) for k in seen)
    cond = seen[0]["controlnet_cond"]  # (2, 3, H, W) in [0, 1]: the tile itself, for both CFG rows
    expected = torch.from_numpy(np.asarray(tile, np.float32) / 255).permute(2, 0, 1)
    assert cond.shape == (2, 3, 64, 64)
    assert torch.allclose(cond[0], expected, atol=1e-3) and torch.equal(cond[0], cond[1])


def test_a_job_gets_only_its_own_lora_in_any_order(pipe, tile, tmp_path: Path) -> None:
    """No adapter leaks from the job before: the pixels equal a fresh pipeline's with only
    this LoRA, bit for bit, whatever ran first."""
    fresh = UpscalePipeline.from_components(tiny.build_components(tmp_path),
                                            lora_dir=pipe.lora_dir)
    alone = {name: run(fresh, tile, loras=[lora(name, 0.9)]) for name in ("detail", "style")}
    for first, second in (("detail", "style"), ("style", "detail")):
        run(pipe, tile, loras=[lora(first, 1.3), lora(second, 0.4)])
        assert differs(run(pipe, tile, loras=[lora(second, 0.9)]), alone[second]) == 0.0


def test_kohya_and_text_encoder_loras(pipe, tile) -> None:
    """A kohya-ss file of the same weights gives the same pixels as the diffusers one; a LoRA
    on the text encoder reaches our own prompt encoding."""
    folder = pipe.lora_dir
    tiny.to_kohya(folder / "detail.safetensors", folder / "detail_kohya.safetensors")
    tiny.write_text_encoder_lora(tiny.build_components(folder / "te")["text_encoder"],
                                 folder / "te_only.safetensors", seed=3)
    try:
        same = run(pipe, tile, loras=[lora("detail", 1.0)])
        assert differs(run(pipe, tile, loras=[lora("detail_kohya", 1.0)]), same) < 0.05
        plain = run(pipe, tile, prompt="tree")
        assert differs(run(pipe, tile, prompt="tree", loras=[lora("te_only", 1.0)]), plain) > 0.3
    finally:
        for name in ("detail_kohya.safetensors", "te_only.safetensors"):
            (folder / name).unlink()


def test_text_encoder_loras_load_switch_off_and_unload_with_the_pinned_peft(
        pipe, tile, monkeypatch) -> None:
    """transformers 5.25 gates its own adapter methods (add/set/enable/disable/delete) on
    peft >= 0.22, which is not released; the images pin peft 0.21.2. diffusers drives text-encoder
    LoRAs through ``load_adapter`` (no gate) and its own layer helpers, so the whole lifecycle
    works with the pin and never reaches that gate."""
    import transformers.integrations.peft as transformers_peft

    gated: list[str] = []
    monkeypatch.setattr(transformers_peft, "check_peft_version",
                        lambda min_version: gated.append(min_version))
    folder = pipe.lora_dir
    tiny.write_text_encoder_lora(tiny.build_components(folder / "te2")["text_encoder"],
                                 folder / "te_words.safetensors", seed=4)
    try:
        plain = run(pipe, tile, prompt="tree")
        worded = run(pipe, tile, prompt="tree", loras=[lora("te_words", 1.0)])
        assert differs(plain, worded) > 0.3
        assert differs(plain, run(pipe, tile, prompt="tree")) == 0.0  # switched off
        pipe.max_loaded_loras = 0  # the next job unloads it (delete_adapters)
        run(pipe, tile, prompt="tree", loras=[lora("detail", 1.0)])
        assert "te_words.safetensors" not in pipe._adapters
        assert differs(plain, run(pipe, tile, prompt="tree")) == 0.0
        assert differs(worded, run(pipe, tile, prompt="tree", loras=[lora("te_words", 1.0)])) == 0.0
    finally:
        pipe.max_loaded_loras = 8
        (folder / "te_words.safetensors").unlink()
    assert gated == []
