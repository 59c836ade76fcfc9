"""SDXL tile refiner: ControlNet-tile img2img + IP-Adapter + stacked LoRAs, loaded once.

Read top to bottom: load (baked weights named by ``weights.MANIFEST``, or injected tiny
components), encode prompts (own chunked encoding: no 77-token cut, CLIP skip applied here
because diffusers ignores ``clip_skip`` when given embeddings), pick the scheduler, apply LoRAs
and the IP-Adapter scale, run tiles in batches with one seed per tile, and map failures to
structured errors. Out of memory frees the cache and retries the batch one tile at a time; a
single tile that still does not fit is a clear, non-retryable ``gpu_out_of_memory``.

The ControlNet is really wired: the pipeline class is
``StableDiffusionXLControlNetImg2ImgPipeline`` and every call passes the tile itself as the
control image with ``controlnet_conditioning_scale``. At scale 0 the ControlNet is skipped
entirely: the same components run as ``StableDiffusionXLImg2ImgPipeline`` (no ControlNet
forward per step, same pixels). Images are PIL RGB; tile sides are padded up to a multiple of
64 (edge pixels repeated) and cropped back, so any tile size works.

``AAT_COMPILE=1`` compiles the UNet in place (``nn.Module.compile``): the pipeline keeps its
``UNet2DConditionModel``, so diffusers' LoRA functions still find their adapters (a
``torch.compile`` wrapper hides them). LoRA hot-swapping is prepared before compiling (ranks
padded up to ``AAT_LORA_MAX_RANK``), so a LoRA file replaced on the volume is swapped into its
adapter without recompiling; a new LoRA set recompiles once.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLImg2ImgPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image
from pydantic import ConfigDict, Field
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from service.core.contracts import MAX_TILES_PER_CALL
from service.core.errors import AatError, BackendUnavailable, ParamsError
from service.core.params import DiffusionSettings, LoraSpec
from workers.upscale import models, weights

log = logging.getLogger(__name__)

PAD_MULTIPLE = 64  # VAE x8 times the UNet's x4: every level divides evenly (1024 tiles need none)
CHUNK = 75  # CLIP tokens per chunk, plus BOS and EOS = 77
SCHEDULERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "dpmpp_2m_sde_karras": (DPMSolverMultistepScheduler,
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "ddim": (DDIMScheduler, {}),
}
MAX_LOADED_LORAS = 8  # adapters kept in memory between requests
STYLE_EMBEDS_KEPT = 4  # style images whose IP-Adapter embeddings are kept (the blank one too)
FAST_ADAPTER = "aat_fast"  # the baked few-step LoRA (quality=fast)
FAST_STEPS = 4  # denoising steps of quality=fast
LORA_MAX_RANK = 128  # hot-swap padding under AAT_COMPILE=1 (AAT_LORA_MAX_RANK overrides)
RESIDENT_MIN_VRAM_GB = 16.0  # below this the models are offloaded to the CPU between calls


@dataclass(frozen=True)
class TileJob:
    tile_id: str
    image: Image.Image  # RGB
    prompt: str = ""  # per-tile prompt (caption), appended to the global prompt
    seed: int = 0


class RefineSettings(DiffusionSettings):
    """Job-wide knobs of one call: the shared ``DiffusionSettings`` (prompt, strength, steps,
    scheduler, LoRAs, ...) plus the decoded style image and the diffusion batch size."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    ip_adapter_image: Image.Image | None = None
    batch_size: int = Field(default=1, ge=1, le=MAX_TILES_PER_CALL)


def effective_prompt(global_prompt: str, tile_prompt: str) -> str:
    """The one place prompts are assembled: global style first, then the tile's caption."""
    return ", ".join(p.strip() for p in (global_prompt, tile_prompt) if p.strip())


class UpscalePipeline:
    """One resident SDXL ControlNet img2img pipeline; ``refine`` is serialised by a lock."""

    def __init__(self, pipe: Any, device: str, lora_dir: Path | None = None,
                 has_ip_adapter: bool = False, fast_lora: Path | None = None) -> None:
        self.pipe: Any = pipe  # StableDiffusionXLControlNetImg2ImgPipeline
        self.device = device
        self.lora_dir = lora_dir
        self.has_ip_adapter = has_ip_adapter
        self.has_fast = fast_lora is not None
        if fast_lora is not None:  # the distilled few-step LoRA of quality=fast, always loaded
            pipe.load_lora_weights(str(fast_lora), adapter_name=FAST_ADAPTER)
        self._lock = threading.Lock()
        # file name -> (adapter, mtime, size), least recently used first
        self._adapters: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self.max_loaded_loras = MAX_LOADED_LORAS
        self._base_scheduler = dict(pipe.scheduler.config)
        self.compiled = bool(getattr(pipe.unet, "_compiled_call_impl", None))
        # style image -> IP-Adapter image embeddings (negative, positive), most recent last
        self._image_embeds: OrderedDict[bytes, list[torch.Tensor]] = OrderedDict()
        # the same modules without the ControlNet, for controlnet_scale 0 (shares all weights)
        plain: Any = StableDiffusionXLImg2ImgPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
            tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, unet=pipe.unet,
            scheduler=pipe.scheduler, image_encoder=pipe.image_encoder,
            feature_extractor=pipe.feature_extractor, add_watermarker=False)
        plain.set_progress_bar_config(disable=True)
        self.plain = plain

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def from_components(cls, components: dict[str, Any], *, device: str = "cpu",
                        ip_adapter: dict[str, Any] | None = None,
                        lora_dir: Path | None = None,
                        fast_lora: Path | None = None) -> UpscalePipeline:
        """Build from in-memory components (tests, ``AAT_WORKER_TINY``)."""
        parts = dict(components)
        parts.setdefault("feature_extractor", CLIPImageProcessor())
        parts.setdefault("add_watermarker", False)
        pipe: Any = StableDiffusionXLControlNetImg2ImgPipeline(**parts)
        if ip_adapter is not None:
            pipe.load_ip_adapter(ip_adapter, subfolder="", weight_name="",
                                 image_encoder_folder=None)
        if device != "cpu":  # built on the CPU already
            pipe.to(device)
        _speedups(pipe)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device, lora_dir, has_ip_adapter=ip_adapter is not None,
                   fast_lora=fast_lora)

    @classmethod
    def from_weights(cls, root: Path | None = None, *, device: str = "cuda",
                     lora_dir: Path | None = None) -> UpscalePipeline:
        """Load the baked weights listed in ``weights.MANIFEST`` (no network access)."""
        root = root or weights.weights_root()
        dtype = torch.bfloat16 if os.environ.get("AAT_DTYPE") == "bf16" else torch.float16
        if device == "cpu":
            dtype = torch.float32
        paths = {name: weights.local_path(name, root) for name in weights.UPSCALE_COMPONENTS}
        controlnet = ControlNetModel.from_pretrained(paths["controlnet"], dtype=dtype)
        vae = AutoencoderKL.from_pretrained(paths["vae"], dtype=dtype)  # fp16-safe VAE
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            paths["ip_adapter"] / weights.IP_ADAPTER_ENCODER, dtype=dtype)
        parts = {"controlnet": controlnet, "vae": vae, "image_encoder": encoder,
                 "feature_extractor": CLIPImageProcessor(), "dtype": dtype,
                 "local_files_only": True, "add_watermarker": False}
        baked = root / weights.DIFFUSERS_FOLDER
        if (baked / "model_index.json").is_file():  # converted at build: ready tensors
            pipe: Any = StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(
                str(baked), **parts)
        else:  # weights fetched without the build's conversion step (local backend)
            pipe = StableDiffusionXLControlNetImg2ImgPipeline.from_single_file(
                str(paths["base"] / weights.BASE_FILE), config=str(paths["sdxl_config"]),
                **parts)
        pipe.load_ip_adapter(str(paths["ip_adapter"]), subfolder=weights.IP_ADAPTER_SUBFOLDER,
                             weight_name=weights.IP_ADAPTER_FILE, image_encoder_folder=None)
        _place(pipe, device)
        _speedups(pipe)
        pipe.set_progress_bar_config(disable=True)
        fast = paths["fast_lora"] / weights.FAST_LORA_FILE
        return cls(pipe, device, lora_dir, has_ip_adapter=True,
                   fast_lora=fast if fast.is_file() else None)

    # ---- the call --------------------------------------------------------------------------

    def refine(self, tiles: list[TileJob], settings: RefineSettings) -> list[Image.Image]:
        """Refined tiles, same order and sizes as ``tiles``."""
        if int(settings.steps * settings.strength) < 1:
            return [t.image.copy() for t in tiles]  # strength 0: nothing to denoise
        if settings.ip_adapter_image is not None and not self.has_ip_adapter:
            raise ParamsError("this worker has no IP-Adapter loaded; drop the style image",
                              code="ip_adapter_unavailable")
        if settings.quality == "fast":
            if not self.has_fast:
                raise ParamsError("this worker image has no few-step LoRA baked in; use "
                                  "quality=standard", code="fast_mode_unavailable")
            settings = fast_settings(settings)
        with self._lock:
            try:
                return self._refine_locked(tiles, settings)
            except AatError:
                raise
            except Exception as exc:
                raise _translate(exc) from exc

    def _refine_locked(self, tiles: list[TileJob], settings: RefineSettings) -> list[Image.Image]:
        fast = settings.quality == "fast"
        self.pipe.scheduler = (_fast_scheduler(self._base_scheduler) if fast
                               else _scheduler(settings.scheduler, self._base_scheduler))
        self.plain.scheduler = self.pipe.scheduler
        self._apply_loras(settings.loras, fast=fast)
        self._apply_ip_scale(settings)
        out: dict[int, Image.Image] = {}
        for group in _batches(tiles, max(1, settings.batch_size)):
            images = self._run_batch_fitting([tiles[i] for i in group], settings)
            out.update(zip(group, images, strict=True))
        return [out[i] for i in range(len(tiles))]

    def _run_batch_fitting(self, batch: list[TileJob], s: RefineSettings) -> list[Image.Image]:
        """Run a batch; out of memory frees the cache and retries one tile at a time once."""
        try:
            return self._run_batch(batch, s)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            _free_memory()
            log.warning("out of memory on a batch of %d tiles; retrying one at a time",
                        len(batch))
        try:
            return [image for tile in batch for image in self._run_batch([tile], s)]
        except Exception as exc:
            if not _is_oom(exc):
                raise
            _free_memory()
            w, h = batch[0].image.size
            raise AatError(
                f"the GPU ran out of memory on a {w}x{h} tile even alone (batch 1, after "
                "freeing memory); use a smaller tile_size or a GPU with more memory",
                code="gpu_out_of_memory", retryable=False) from exc

    def _run_batch(self, batch: list[TileJob], s: RefineSettings) -> list[Image.Image]:
        padded = [_pad(t.image) for t in batch]
        prompts = [effective_prompt(s.prompt, t.prompt) for t in batch]
        embeds, pooled, neg, neg_pooled = self.encode_prompts(prompts, s.negative_prompt,
                                                              s.clip_skip)
        gen_device = "cpu" if self.device == "cpu" else self.device
        generators = [torch.Generator(gen_device).manual_seed(t.seed) for t in batch]
        extra: dict[str, Any] = {}
        if self.has_ip_adapter:
            extra["ip_adapter_image_embeds"] = self.image_embeds(s.ip_adapter_image, s.cfg_scale)
        if s.controlnet_scale > 0:
            pipe = self.pipe
            extra.update(control_image=padded, controlnet_conditioning_scale=s.controlnet_scale)
        else:
            pipe = self.plain  # scale 0 adds nothing: skip the ControlNet's forward passes
        with torch.inference_mode():
            result = pipe(
                image=padded, strength=s.strength,
                num_inference_steps=s.steps, guidance_scale=s.cfg_scale,
                prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled,
                generator=generators, output_type="pil", **extra,
            ).images
        return [img.crop((0, 0, *t.image.size)) for img, t in zip(result, batch, strict=True)]

    def image_embeds(self, image: Image.Image | None, cfg_scale: float) -> list[torch.Tensor]:
        """The IP-Adapter's image embeddings of ``image`` (a blank image when there is no style
        image: the adapter is loaded, so the call needs some, at scale 0), as the pipeline's
        ``ip_adapter_image_embeds``. Computed once per image and kept (the last
        ``STYLE_EMBEDS_KEPT``): the image encoder (ViT-H/14, 632 M parameters) otherwise runs
        twice per call (the image and the zero image of the negative side), for every tile of
        a job with the same style image. The same numbers as diffusers' own encoding."""
        style = image.convert("RGB") if image is not None else None
        key = (b"blank" if style is None
               else hashlib.sha256(style.tobytes()).digest() + repr(style.size).encode())
        embeds = self._image_embeds.get(key)
        if embeds is None:
            with torch.inference_mode():  # [negative, positive] per adapter, as with CFG
                embeds = self.pipe.prepare_ip_adapter_image_embeds(
                    style or Image.new("RGB", (224, 224)), None, self.device, 1,
                    do_classifier_free_guidance=True)
            self._image_embeds[key] = embeds
            while len(self._image_embeds) > STYLE_EMBEDS_KEPT:
                self._image_embeds.popitem(last=False)
        self._image_embeds.move_to_end(key)
        cfg = cfg_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        return embeds if cfg else [e.chunk(2)[1] for e in embeds]

    # ---- prompts ---------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str], negative: str, clip_skip: int = 2
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDXL embeddings for any prompt length: 75-token chunks through both encoders.

        ``clip_skip`` counts as in A1111/ComfyUI: the hidden state ``clip_skip`` layers from
        the end (1 = last layer, 2 = penultimate = SDXL's default). Pooled embeddings come from
        encoder 2's first chunk. An empty negative prompt gives zeros, as SDXL's
        ``force_zeros_for_empty_prompt``.
        """
        texts = [*prompts, negative]
        pipe = self.pipe
        pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        ids = [[_token_ids(tok, t) for t in texts] for tok, _ in pairs]
        n_chunks = max(1, *(math.ceil(len(x) / CHUNK) for per in ids for x in per))
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        with torch.inference_mode():
            for (tok, enc), per_text in zip(pairs, ids, strict=True):
                batch = torch.stack([_chunked(tok, x, n_chunks) for x in per_text])  # B,n,77
                flat = batch.reshape(-1, CHUNK + 2).to(self.device)
                out = enc(flat, output_hidden_states=True)
                # never the token embeddings themselves (a tiny encoder has few layers)
                states = out.hidden_states[-max(1, min(clip_skip, len(out.hidden_states) - 1))]
                hidden.append(states.reshape(len(texts), n_chunks * (CHUNK + 2), -1))
                if enc is pipe.text_encoder_2:
                    pooled = out[0].reshape(len(texts), n_chunks, -1)[:, 0]
        assert pooled is not None
        dtype = pipe.unet.dtype
        embeds = torch.cat(hidden, dim=-1).to(dtype)
        pooled = pooled.to(dtype)
        pos, neg = embeds[:-1], embeds[-1:].expand(len(prompts), -1, -1)
        pos_pooled, neg_pooled = pooled[:-1], pooled[-1:].expand(len(prompts), -1)
        if not negative.strip():
            neg, neg_pooled = torch.zeros_like(neg), torch.zeros_like(neg_pooled)
        return pos, pos_pooled, neg.contiguous(), neg_pooled.contiguous()

    # ---- LoRAs and IP-Adapter --------------------------------------------------------------

    def _apply_loras(self, loras: list[LoraSpec], fast: bool = False) -> None:
        names, weights_ = [], []
        for lora in loras:
            names.append(self._ensure_lora(lora.name))
            weights_.append(lora.weight)
        self._evict_loras(keep=set(names))
        if fast:
            names.append(FAST_ADAPTER)
            weights_.append(1.0)
        if names:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights_)
        elif self._adapters or self.has_fast:
            self.pipe.disable_lora()

    def _ensure_lora(self, name: str) -> str:
        path = models.resolve(name, self.lora_dir)
        stat = path.stat()
        adapter = "l" + hashlib.sha256(path.name.encode()).hexdigest()[:16]
        key = (adapter, stat.st_mtime_ns, stat.st_size)
        if self._adapters.get(path.name) == key:
            self._adapters.move_to_end(path.name)
            return adapter
        models.check_safetensors(path)
        if path.name in self._adapters:
            if self.compiled and self._hotswap(path, adapter):
                self._adapters[path.name] = key
                return adapter
            self.pipe.delete_adapters(adapter)
            del self._adapters[path.name]
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=adapter)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ParamsError(f"LoRA {path.name} could not be loaded into SDXL: {exc}"[:300],
                              code="lora_invalid") from exc
        self._adapters[path.name] = key
        log.info("loaded LoRA %s as adapter %s", path.name, adapter)
        return adapter

    def _hotswap(self, path: Path, adapter: str) -> bool:
        """Swap a replaced LoRA file into its loaded adapter (compiled UNet: no recompile)."""
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=adapter, hotswap=True)
        except (ValueError, KeyError, RuntimeError) as exc:  # other rank/targets: reload
            log.info("LoRA %s cannot be hot-swapped (%s); reloading it", path.name, exc)
            return False
        log.info("hot-swapped LoRA %s into adapter %s", path.name, adapter)
        return True

    def _evict_loras(self, keep: set[str]) -> None:
        """Unload least recently used adapters beyond ``max_loaded_loras`` (VRAM is finite)."""
        for file_name, (adapter, _, _) in list(self._adapters.items()):
            if len(self._adapters) <= self.max_loaded_loras:
                break
            if adapter not in keep:
                self.pipe.delete_adapters(adapter)
                del self._adapters[file_name]
                log.info("unloaded LoRA %s (least recently used)", file_name)

    def _apply_ip_scale(self, s: RefineSettings) -> None:
        if self.has_ip_adapter:
            scale = s.ip_adapter_scale if s.ip_adapter_image is not None else 0.0
            if s.ip_adapter_mode == "style" and scale > 0:
                self.pipe.set_ip_adapter_scale(style_only(scale))
            else:
                self.pipe.set_ip_adapter_scale(scale)

    # ---- memory (the local backend parks one model when two do not fit) -------------------

    parked = False

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.pipe.components.values()
                   if isinstance(m, torch.nn.Module) for p in m.parameters())

    def park(self) -> None:
        """Move the weights to CPU memory and free the GPU's copy (a no-op when offloaded)."""
        if not self.parked and not _offloaded(self.pipe):
            self.pipe.to("cpu")
            _free_memory()
        self.parked = True

    def unpark(self) -> None:
        if self.parked and not _offloaded(self.pipe):
            self.pipe.to(self.device)
        self.parked = False

    # ---- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {"model_loaded": True, "device": self.device,
                                "ip_adapter": self.has_ip_adapter,
                                "loras_loaded": sorted(self._adapters)}
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            free, total = torch.cuda.mem_get_info()
            info.update(gpu=torch.cuda.get_device_name(), vram_total_gb=round(total / 1e9, 2),
                        vram_used_gb=round((total - free) / 1e9, 2))
        return info


# ---- helpers ---------------------------------------------------------------------------------


def _place(pipe: Any, device: str) -> None:
    """Keep everything resident when the GPU fits it; offload only on small cards."""
    if device.startswith("cuda"):
        total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
        if total_gb < RESIDENT_MIN_VRAM_GB:
            log.warning("%.1f GB VRAM: enabling model CPU offload (slower)", total_gb)
            pipe.enable_model_cpu_offload()
            return
    pipe.to(device)


def fast_settings(s: RefineSettings) -> RefineSettings:
    """quality=fast: ``FAST_STEPS`` denoising steps without CFG (the few-step LoRA's recipe).

    img2img runs the last ``strength`` share of the schedule, so the schedule gets
    ``FAST_STEPS / strength`` steps and exactly ``FAST_STEPS`` of them run.
    """
    steps = min(100, math.ceil(FAST_STEPS / max(s.strength, 1e-3) - 1e-9))
    return s.model_copy(update={"steps": steps, "cfg_scale": 1.0})


def _fast_scheduler(base_config: dict[str, Any]) -> Any:
    """Euler with trailing timesteps, as the distilled SDXL LoRAs are sampled."""
    return EulerDiscreteScheduler.from_config(base_config, timestep_spacing="trailing")


def style_only(scale: float) -> dict[str, Any]:
    """IP-Adapter scale per block, InstantStyle's choice for SDXL: only the second attention
    of the first up block sees the style image (it carries style; the others carry objects and
    layout, which would bleed the style image's content into the tile)."""
    return {"up": {"block_0": [0.0, scale, 0.0]}}


def _offloaded(pipe: Any) -> bool:
    """Model CPU offload already moves each model in and out by itself."""
    return bool(getattr(pipe, "_all_hooks", None))


def _speedups(pipe: Any) -> None:
    """Opt-in speed levers measured by ``bench/gpu_tile.py``: ``AAT_CHANNELS_LAST=1`` and
    ``AAT_COMPILE=1`` (see :func:`compile_unet`; the first call per tile size and LoRA set
    compiles, so it pays off only on long-lived workers)."""
    if os.environ.get("AAT_CHANNELS_LAST") == "1":
        for model in (pipe.unet, pipe.controlnet):
            model.to(memory_format=torch.channels_last)
    if os.environ.get("AAT_COMPILE") == "1":
        compile_unet(pipe, backend=os.environ.get("AAT_COMPILE_BACKEND", "inductor"))


def compile_unet(pipe: Any, backend: str = "inductor") -> None:
    """Compile the UNet in place, after preparing LoRA hot-swap (diffusers' documented order).

    ``backend="eager"`` runs the same graph capture without generating code (tests on CPU);
    ``inductor`` needs a C compiler in the image for its CPU-side kernels.
    """
    rank = int(os.environ.get("AAT_LORA_MAX_RANK", LORA_MAX_RANK))
    pipe.enable_lora_hotswap(target_rank=rank, check_compiled="ignore")
    options: dict[str, Any] = {"backend": backend}
    if backend == "inductor":
        options["mode"] = "max-autotune-no-cudagraphs"
    pipe.unet.compile(**options)


def _scheduler(name: str, base_config: dict[str, Any]) -> Any:
    if name not in SCHEDULERS:
        raise ParamsError(f"unknown scheduler {name!r}; use one of {sorted(SCHEDULERS)}",
                          code="invalid_params")
    cls, kwargs = SCHEDULERS[name]
    return cls.from_config(base_config, **kwargs)


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, truncation=False,
                          verbose=False).input_ids)


def _chunked(tokenizer: Any, ids: list[int], n_chunks: int) -> torch.Tensor:
    """``ids`` as ``n_chunks`` rows of ``BOS + 75 tokens + EOS``, padded."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for i in range(n_chunks):
        part = ids[i * CHUNK:(i + 1) * CHUNK]
        row = [bos, *part, eos]
        rows.append(row + [pad] * (CHUNK + 2 - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def _pad(image: Image.Image) -> Image.Image:
    """Pad right/bottom to a multiple of ``PAD_MULTIPLE`` by repeating edge pixels."""
    w, h = image.size
    pw, ph = -w % PAD_MULTIPLE, -h % PAD_MULTIPLE
    if pw == 0 and ph == 0:
        return image.convert("RGB")
    arr = np.asarray(image.convert("RGB"))
    return Image.fromarray(np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="edge"))


def _batches(tiles: list[TileJob], size: int) -> list[list[int]]:
    """Indices grouped by padded tile size, then cut into batches of at most ``size``."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tiles):
        w, h = t.image.size
        by_shape.setdefault((w + -w % PAD_MULTIPLE, h + -h % PAD_MULTIPLE), []).append(i)
    return [ids[j:j + size] for ids in by_shape.values() for j in range(0, len(ids), size)]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Failures that come from the request or the code, not the machine: a retry fails the same way.
_NOT_RETRYABLE = (ValueError, TypeError, KeyError, AttributeError, NotImplementedError)


def _translate(exc: Exception) -> AatError:
    """Library failures as structured errors; only machine trouble is retryable."""
    text = str(exc)
    if _is_oom(exc):  # an out-of-memory the batch-1 retry did not see (e.g. prompt encoding)
        _free_memory()
        return BackendUnavailable(
            "the GPU ran out of memory on this tile; it will be retried (use smaller tiles if "
            "it keeps failing)", code="gpu_out_of_memory", retryable=True)
    log.exception("refine failed")
    return AatError(f"refine failed: {type(exc).__name__}: {text}"[:400], code="worker_internal",
                    retryable=not isinstance(exc, _NOT_RETRYABLE))
