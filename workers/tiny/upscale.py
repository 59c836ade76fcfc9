"""Tiny random SDXL + ControlNet-tile + IP-Adapter + LoRA components, built offline.

Used by the CPU tests, and through :func:`build_pipeline` by ``AAT_WORKER_TINY=1`` (the
handler's smoke-test mode, which the emulated worker runs), the ``local`` backend's tiny mode
and ``bench/gpu_tile.py --tiny``. Nothing here downloads anything: the CLIP tokenizers are
written from a byte-level vocabulary (the "tokenizer trick"), the IP-Adapter (the Plus kind the
worker image bakes: a resampler over a CLIP vision encoder's patch features) and LoRA weights
are random tensors shaped after the tiny UNet. Layouts follow the dummy components
of diffusers' own SDXL ControlNet img2img tests, with a four-level VAE so images shrink 8x to
latents as in the real model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

_UNET_LAYOUT: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "transformer_layers_per_block": (1, 2),
    "projection_class_embeddings_input_dim": 80,  # 6 time ids x 8 + pooled text 32
    "cross_attention_dim": 64,
    "in_channels": 4,
}


def write_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer with byte-level characters only (one token per character)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(256)]
    vocab = {ch: i for i, ch in enumerate(chars)}
    vocab.update({ch + "</w>": 256 + i for i, ch in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


CLIP_VOCAB_SIZE = 49408  # 256 bytes, 256 word-final bytes, 48,894 merges, BOS, EOS
CLIP_BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"  # in the open-clip-torch wheel


def write_real_clip_tokenizer(folder: Path, pad: str = "<|endoftext|>") -> CLIPTokenizer:
    """SDXL's real 49,408-token CLIP tokenizer, built offline from the BPE merges file that the
    ``open-clip-torch`` wheel ships (read from its installed files; ``open_clip`` itself is never
    imported: it needs torchvision). ``pad="!"`` gives SDXL's second tokenizer.

    The vocabulary is CLIP's construction: the 256 byte symbols, the same with the word-end
    mark ``</w>``, one token per merge in file order, then the two special tokens.
    """
    import gzip
    from importlib import metadata

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    try:
        bpe = Path(str(metadata.distribution("open-clip-torch").locate_file(CLIP_BPE_FILE)))
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError("the real CLIP tokenizer is built from open-clip-torch's BPE file: "
                           "pip install --no-deps open-clip-torch (scripts/test does)") from exc
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    n_merges = CLIP_VOCAB_SIZE - 2 * 256 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]  # line 0: a version note
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"{bpe} gave {len(vocab)} CLIP tokens, not {CLIP_VOCAB_SIZE}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=77, pad_token=pad)


def _text_config(vocab_size: int = 1000) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, pad_token_id=1,
        vocab_size=vocab_size, hidden_act="gelu", projection_dim=32,
    )


def build_components(workdir: Path, seed: int = 0,
                     real_tokenizers: bool = False) -> dict[str, Any]:
    """Every component of ``StableDiffusionXLControlNetImg2ImgPipeline`` plus an image encoder.

    ``real_tokenizers``: SDXL's two real CLIP tokenizers (see :func:`write_real_clip_tokenizer`)
    and text encoders sized for their 49,408 tokens, instead of the byte-level ones."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, out_channels=4,
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **_UNET_LAYOUT,
    )
    torch.manual_seed(seed + 1)
    layout = {k: v for k, v in _UNET_LAYOUT.items() if k != "in_channels"}
    controlnet = ControlNetModel(
        in_channels=4, conditioning_embedding_out_channels=(16, 16, 32, 32), **layout
    )
    _wake_zero_convs(controlnet)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        block_out_channels=[16, 16, 32, 32], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, norm_num_groups=8, sample_size=64, force_upcast=False,
    )
    torch.manual_seed(seed + 3)
    vocab_size = CLIP_VOCAB_SIZE if real_tokenizers else 1000
    text_encoder = CLIPTextModel(_text_config(vocab_size))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab_size))
    torch.manual_seed(seed + 4)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=224, projection_dim=32, intermediate_size=37,
        num_attention_heads=4, num_channels=3, num_hidden_layers=5, patch_size=14,
    ))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    if real_tokenizers:  # SDXL pads the first with EOS, the second with "!"
        tokenizer = write_real_clip_tokenizer(workdir / "tokenizer")
        tokenizer_2 = write_real_clip_tokenizer(workdir / "tokenizer_2", pad="!")
    else:
        tokenizer = tokenizer_2 = write_clip_tokenizer(workdir / "tokenizer")
    return {
        "unet": unet, "controlnet": controlnet, "vae": vae, "scheduler": scheduler,
        "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer, "tokenizer_2": tokenizer_2, "image_encoder": image_encoder,
    }


def _wake_zero_convs(controlnet: Any) -> None:
    """Give the zero-initialised output convolutions small random weights.

    A fresh ControlNet adds exactly nothing to the UNet (that is how training starts), so a
    tiny random one would hide whether the control image is wired at all.
    """
    gen = torch.Generator().manual_seed(7)
    convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
        last = controlnet.controlnet_cond_embedding.conv_out
        last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * 0.3)


Draw = Callable[[tuple[int, ...], int], torch.Tensor]  # (shape, fan_in) -> random weights


def ip_adapter_plus_state_dict(unet: Any, image_hidden: int = 32, queries: int = 4,
                               dim: int = 64, heads: int = 1, seed: int = 6,
                               draw: Draw | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Random IP-Adapter Plus weights in the original checkpoints' key layout (what the baked
    ``ip-adapter-plus_sdxl_vit-h`` file holds): a resampler of ``queries`` learned latents of
    width ``dim`` reading the image encoder's penultimate hidden states (``image_hidden``
    features per patch), four blocks of ``heads`` 64-wide heads (the depth and head width
    diffusers' converter assumes), and per cross-attention layer of ``unet`` the image
    tokens' ``to_k_ip``/``to_v_ip``. The defaults are tiny; :mod:`workers.tiny.full_size`
    passes the real sizes and its own ``draw`` (weights ~ N(0, 1/fan_in) from a shared pool)."""
    gen, ip_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)

    def tiny(shape: tuple[int, ...], fan_in: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def tiny_ip(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        return torch.randn(*shape, generator=ip_gen) * 0.5

    rand, ip_rand = draw or tiny, draw or tiny_ip
    cross, inner, ff = unet.config.cross_attention_dim, 64 * heads, 4 * dim
    latents = (1, queries, dim)
    proj: dict[str, torch.Tensor] = {
        "latents": draw(latents, dim) if draw else tiny(latents, dim, scale=dim ** -0.5),
        "proj_in.weight": rand((dim, image_hidden), image_hidden),
        "proj_in.bias": torch.zeros(dim),
        "proj_out.weight": rand((cross, dim), dim), "proj_out.bias": torch.zeros(cross),
        "norm_out.weight": torch.ones(cross), "norm_out.bias": torch.zeros(cross),
    }
    for i in range(4):  # block i: perceiver attention (0) then a feed-forward (1)
        for norm in ("norm1", "norm2"):
            proj[f"layers.{i}.0.{norm}.weight"] = torch.ones(dim)
            proj[f"layers.{i}.0.{norm}.bias"] = torch.zeros(dim)
        proj[f"layers.{i}.0.to_q.weight"] = rand((inner, dim), dim)
        proj[f"layers.{i}.0.to_kv.weight"] = rand((2 * inner, dim), dim)
        proj[f"layers.{i}.0.to_out.weight"] = rand((dim, inner), inner)
        proj[f"layers.{i}.1.0.weight"] = torch.ones(dim)
        proj[f"layers.{i}.1.0.bias"] = torch.zeros(dim)
        proj[f"layers.{i}.1.1.weight"] = rand((ff, dim), dim)
        proj[f"layers.{i}.1.3.weight"] = rand((dim, ff), ff)
    ip: dict[str, torch.Tensor] = {}
    key_id = 1  # the original files number every attention processor; the odd ones are attn2
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet, name)
        ip[f"{key_id}.to_k_ip.weight"] = ip_rand((hidden, cross), cross)
        ip[f"{key_id}.to_v_ip.weight"] = ip_rand((hidden, cross), cross)
        key_id += 2
    return {"image_proj": proj, "ip_adapter": ip}


def build_pipeline(*, lora_dir: Path | None = None, workdir: Path | None = None,
                   seed: int = 0) -> Any:
    """The tiny upscale worker: :func:`build_components` with an IP-Adapter Plus loaded through
    diffusers' ``load_ip_adapter``, as the worker image bakes it (CPU). The one builder of the
    ``AAT_WORKER_TINY`` handler, the emulated worker, the ``local`` backend's tiny mode and
    ``bench/gpu_tile.py --tiny``."""
    import tempfile

    from workers.upscale.pipeline import UpscalePipeline

    comps = build_components(workdir or Path(tempfile.mkdtemp(prefix="aat-tiny-")), seed=seed)
    return UpscalePipeline.from_components(
        comps, ip_adapter=ip_adapter_plus_state_dict(comps["unet"]), lora_dir=lora_dir)


def _hidden_size(unet: Any, name: str) -> int:
    channels = list(unet.config.block_out_channels)
    if name.startswith("mid_block"):
        return channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(channels))[int(name[len("up_blocks.")])]
    return channels[int(name[len("down_blocks.")])]


def write_lora(unet: Any, path: Path, seed: int, rank: int = 4) -> Path:
    """Write a random peft LoRA for ``unet`` as a diffusers-format ``.safetensors`` file.

    The UNet is left unchanged (the adapter is added, read and deleted again).
    """
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    adapter = f"tmp_{seed}"
    unet.add_adapter(config, adapter_name=adapter)
    state = get_peft_model_state_dict(unet, adapter_name=adapter)
    unet.delete_adapters(adapter)
    tensors = {f"unet.{k}": v.detach().clone().contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def save_weights_layout(components: dict[str, Any], root: Path,
                        ip_adapter: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Save tiny components in the folders ``workers.upscale.weights`` bakes (diffusers fp16
    layout of the checkpoint, ControlNet, VAE, IP-Adapter file and image encoder), so
    ``UpscalePipeline.from_weights`` runs its real loading path on them."""
    from diffusers import StableDiffusionXLPipeline

    from workers.upscale import weights

    base: Any = StableDiffusionXLPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"],
        text_encoder_2=components["text_encoder_2"], tokenizer=components["tokenizer"],
        tokenizer_2=components["tokenizer_2"], unet=components["unet"],
        scheduler=components["scheduler"], add_watermarker=False)
    base.save_pretrained(str(root / weights.DIFFUSERS_FOLDER))
    components["controlnet"].save_pretrained(str(weights.local_path("controlnet", root)))
    components["vae"].save_pretrained(str(weights.local_path("vae", root)))
    ip_root = weights.local_path("ip_adapter", root)
    components["image_encoder"].save_pretrained(str(ip_root / weights.IP_ADAPTER_ENCODER))
    flat = {f"{part}.{key}": value.contiguous() for part, tensors in ip_adapter.items()
            for key, value in tensors.items()}
    (ip_root / weights.IP_ADAPTER_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    save_file(flat, str(ip_root / weights.IP_ADAPTER_SUBFOLDER / weights.IP_ADAPTER_FILE))
    return root


def write_text_encoder_lora(text_encoder: Any, path: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA on the first text encoder's attention, in diffusers format
    (``text_encoder`` is changed: pass a throwaway copy)."""
    from peft import inject_adapter_in_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    adapter = f"tmp_te_{seed}"
    inject_adapter_in_model(config, text_encoder, adapter_name=adapter)
    state = get_peft_model_state_dict(text_encoder, adapter_name=adapter)
    tensors = {f"text_encoder.{k}": v.detach().clone().contiguous() for k, v in state.items()}
    save_file(tensors, str(path))
    return path


def to_kohya(diffusers_lora: Path, path: Path) -> Path:
    """The same UNet LoRA in kohya-ss naming (``lora_unet_<module>.lora_down/up`` + alpha)."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for key, value in load_file(str(diffusers_lora)).items():
        module, _, kind = key.removeprefix("unet.").rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        if kind.startswith("A"):
            out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))  # alpha = rank: scale 1
    save_file(out, str(path))
    return path
