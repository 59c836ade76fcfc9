"""Seconds per tile and peak VRAM of the upscale worker pipeline, configurations side by side.

    python bench/gpu_tile.py --random-weights           # full-size SDXL, random weights, CUDA
    python bench/gpu_tile.py --random-weights --device cpu --size 256 --steps 2   # CI proof
    python bench/gpu_tile.py                            # the baked weights (AAT_WEIGHTS_DIR)
    python bench/gpu_tile.py --tiny                     # tiny random parts (CPU, 64 px)

Timing depends on shapes, not weight values: ``--random-weights`` builds the full-size SDXL
UNet, ControlNet, VAE and IP-Adapter Plus (ViT-H image encoder, resampler) from the configs in
``workers/tiny/sdxl_configs/`` with random weights (nothing to download; fits the no-network
GPU host). As in the worker image, the IP-Adapter is loaded in every row; its image encoder
runs once per style image (the worker keeps the embeddings), so a warmed-up row measures what
the tiles of a job after its first cost. Every configuration runs the real
``UpscalePipeline.refine`` on the same tiles after a warm-up; each row reports seconds per tile, its ratio to the baseline measured in
the same run (eager, SDPA, ControlNet on, batch 1, strength 0.35, ``--steps`` steps, CFG on, no
style image), and peak VRAM. Rows: bf16, attention without the fused SDPA kernels,
channels_last, torch.compile of the UNet, ControlNet off, batch 2 and 4, the few-step mode (4
denoising steps, CFG 1: the cost of a distilled LoRA refine) and a style image (IP-Adapter Plus
at scale 0.6). On the CPU the compile and fp16/bf16 rows are skipped. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.core.params import LoraSpec
from workers.upscale import models
from workers.upscale.pipeline import RefineSettings, TileJob, UpscalePipeline

FEW_STEPS = 4  # denoising steps of the distilled (fast) refine
GOALS = {"standard_s_per_1024_tile": 1.0, "fast_s_per_1024_tile": 0.35}  # one H100


@dataclasses.dataclass
class Row:
    name: str
    s_per_tile: float
    peak_gb: float | None
    note: str = ""


def tiles(size: int, count: int) -> list[TileJob]:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, size)[None, :, None].repeat(size, 0).repeat(3, 2)
    return [TileJob(str(i), Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255)
                                            .astype(np.uint8)), "stone wall, moss", i)
            for i in range(count)]


def style_image() -> Image.Image:
    """A 512 px style image (the processor resizes it to the encoder's 224 px)."""
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))


def measure(pipe: UpscalePipeline, jobs: list[TileJob], settings: RefineSettings,
            repeats: int, warm_up: bool = True) -> tuple[float, float | None]:
    cuda = pipe.device.startswith("cuda")
    if warm_up:
        pipe.refine(jobs[:settings.batch_size], settings)  # warm-up (and compile, if any)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        pipe.refine(jobs, settings)
    if cuda:
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / (repeats * len(jobs))
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    return elapsed, peak


def cpu_dtype() -> torch.dtype:
    """bfloat16 where this CPU runs it faster than float32 (AMX), else float32: without AMX,
    PyTorch's bfloat16 convolutions are about 5x (AVX-512) to 300x (AVX2) slower than float32
    (measured on one Xeon with oneDNN limited to each), which made the CPU proof take hours."""
    conv, x = torch.nn.Conv2d(320, 320, 3, padding=1), torch.randn(1, 320, 16, 16)
    seconds: dict[torch.dtype, float] = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            layer, data = conv.to(dtype), x.to(dtype)
            layer(data)  # warm-up
            start = time.perf_counter()
            layer(data)
            seconds[dtype] = time.perf_counter() - start
    return min(seconds, key=lambda d: seconds[d])


def load(kind: str, device: str, dtype: torch.dtype) -> UpscalePipeline:
    if kind == "tiny":
        from workers.tiny import upscale as tiny_parts

        return tiny_parts.build_pipeline()
    if kind == "random":  # the image's parts at full size, IP-Adapter Plus included
        from workers.tiny import full_size

        shared = not device.startswith("cuda")  # the CPU proof: 2-3 GB of weights, not 18 GB
        comps = full_size.build_components(device, dtype, shared=shared)
        return UpscalePipeline.from_components(
            comps, device=device, ip_adapter=full_size.ip_adapter_plus_state_dict(
                comps["unet"], comps["image_encoder"], shared=shared))
    os.environ["AAT_DTYPE"] = "bf16" if dtype == torch.bfloat16 else "fp16"
    return UpscalePipeline.from_weights(device=device)


def lora_pair(pipe: UpscalePipeline) -> list[LoraSpec] | None:
    names = [m.name for m in models.list_models(pipe.lora_dir).models][:2]
    return [LoraSpec(name=n, weight=0.8) for n in names] if len(names) == 2 else None


def run(kind: str, device: str, size: int, steps: int, repeats: int) -> tuple[list[Row], dict]:
    cuda = device.startswith("cuda")
    # the CPU run is a proof, not a figure: its weights share values (full_size.SharedValues)
    dtype = torch.float16 if cuda else cpu_dtype() if kind == "random" else torch.float32
    pipe = load(kind, device, dtype)
    strength = 0.35 if int(steps * 0.35) >= 1 else 1.0 / steps + 1e-6  # at least one step
    jobs = tiles(size, 4)
    base = RefineSettings(prompt="detailed game art", steps=steps, strength=strength,
                          scheduler="dpmpp_2m_sde_karras", controlnet_scale=0.7)
    rows: list[Row] = []

    def add(name: str, settings: RefineSettings, note: str = "",
            change: Callable[[], Any] | None = None, runs: list[TileJob] | None = None) -> None:
        if change is not None:
            change()
        # the CPU proof warms up once: no kernels to compile or autotune, half the run time
        s, peak = measure(pipe, runs or jobs[:1], settings, repeats, warm_up=cuda or not rows)
        rows.append(Row(name, s, peak, note))
        print(f"  {name}: {s:.3f} s/tile", file=sys.stderr, flush=True)  # progress

    add("baseline (CN on, eager, SDPA, batch 1)", base)
    add("ControlNet off (skipped)", base.model_copy(update={"controlnet_scale": 0.0}))
    for batch in (2, 4):
        add(f"tile batch {batch}", base.model_copy(update={"batch_size": batch}),
            runs=jobs[:batch])
    few = base.model_copy(update={"steps": math.ceil(FEW_STEPS / base.strength),
                                  "cfg_scale": 1.0, "scheduler": "euler"})
    add(f"few-step ({FEW_STEPS} steps, CFG 1)", few, "what a distilled LoRA refine costs")
    add("style image (IP-Adapter Plus, scale 0.6)",
        base.model_copy(update={"ip_adapter_image": style_image(), "ip_adapter_scale": 0.6}),
        "image tokens in every cross-attention")
    if kind == "weights":
        loras = lora_pair(pipe)
        if loras:
            add("+ two LoRAs", base.model_copy(update={"loras": loras}))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # what attention costs without fused SDPA kernels
        add("attention without fused SDPA kernels", base)
    add("channels_last UNet + ControlNet", base, change=lambda: [
        m.to(memory_format=torch.channels_last) for m in (pipe.pipe.unet, pipe.pipe.controlnet)])
    if cuda:
        from workers.upscale.pipeline import compile_unet

        add("+ torch.compile UNet (in place)", base, "includes channels_last",
            change=lambda: compile_unet(pipe.pipe))
        add("+ compiled, few-step", few, "the fast mode's target")
        del pipe
        torch.cuda.empty_cache()
        pipe = load(kind, device, torch.bfloat16)
        add("bf16 instead of fp16 (eager)", base)
    info = {"strength": round(strength, 4), "steps": steps, "size": size,
            "dtype": str(dtype).removeprefix("torch."),
            "shared_weights": kind == "random" and not cuda}
    return rows, info


def report(rows: list[Row], kind: str, device: str, info: dict[str, Any]) -> dict[str, Any]:
    base = rows[0].s_per_tile
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    weights = {"tiny": "tiny random parts", "random": "full-size SDXL, random weights",
               "weights": "baked weights"}[kind]
    if info.get("shared_weights"):
        weights += f" sharing values ({info['dtype']}; a proof, not a figure)"
    print(f"upscale worker, seconds per {info['size']} px tile, {info['steps']} steps at "
          f"strength {info['strength']} — {weights} on {where}")
    print(f"{'configuration':<42} {'s/tile':>8} {'x baseline':>11} {'peak GB':>8}  note")
    for r in rows:
        peak = f"{r.peak_gb:8.2f}" if r.peak_gb is not None else f"{'-':>8}"
        print(f"{r.name:<42} {r.s_per_tile:8.3f} {r.s_per_tile / base:11.2f} {peak}  {r.note}")
    return {"bench": "gpu_tile", "device": where, "weights": kind, **info,
            "goals": GOALS if info["size"] == 1024 else None,
            "rows": [{"name": r.name, "s_per_tile": round(r.s_per_tile, 4),
                      "x_baseline": round(r.s_per_tile / base, 3),
                      "peak_gb": None if r.peak_gb is None else round(r.peak_gb, 2),
                      "note": r.note} for r in rows]}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--random-weights", action="store_true",
                        help="full-size SDXL from configs with random weights (no download)")
    source.add_argument("--tiny", action="store_true", help="tiny random parts on the CPU")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--size", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kind = "random" if args.random_weights else "tiny" if args.tiny else "weights"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "tiny":
        device, args.size, args.steps = "cpu", min(args.size, 64), min(args.steps, 8)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (run on a GPU host, or pass --device cpu "
              "--random-weights --size 256 --steps 2 to check the harness on the CPU)")
        return 0
    if kind == "weights" and not device.startswith("cuda"):
        print("no CUDA GPU here: nothing to measure with the baked weights (pass "
              "--random-weights --device cpu --size 256 --steps 2 to check the harness)")
        return 0
    torch.manual_seed(0)
    rows, info = run(kind, device, args.size, args.steps, args.repeats)
    print(json.dumps(report(rows, kind, device, info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
