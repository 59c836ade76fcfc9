"""Seconds per 1024 px tile and peak VRAM of the upscale worker pipeline, side by side.

    python bench/gpu_tile.py                 # real weights (AAT_WEIGHTS_DIR), needs a CUDA GPU
    python bench/gpu_tile.py --tiny          # the same harness on tiny random parts (CPU, 64 px)

Every configuration runs the real ``UpscalePipeline.refine`` on the same tiles after a warm-up,
and the table reports each one's time per tile as a ratio to the baseline measured in the same
run (fp16 eager, SDPA, ControlNet on, no IP-Adapter image, no LoRA, batch 1). Configurations:
ControlNet off (scale 0), IP-Adapter style image, two LoRAs (the first two files in the LoRA
folder; skipped when there are fewer), tile batches of 4, attention without the fused SDPA
kernels, channels_last, torch.compile of the UNet, bf16. Without a CUDA GPU (and without ``--tiny``) it
says so and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.core.params import LoraSpec
from workers.upscale import models
from workers.upscale.pipeline import RefineSettings, TileJob, UpscalePipeline


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


def measure(pipe: UpscalePipeline, jobs: list[TileJob], settings: RefineSettings,
            repeats: int) -> tuple[float, float | None]:
    cuda = pipe.device.startswith("cuda")
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


def load(tiny: bool, dtype: str | None = None) -> UpscalePipeline:
    if tiny:
        from workers.tiny import upscale as tiny_parts

        comps = tiny_parts.build_components(Path(tempfile.mkdtemp()))
        return UpscalePipeline.from_components(
            comps, ip_adapter=tiny_parts.ip_adapter_state_dict(comps["unet"]))
    import os

    if dtype:
        os.environ["AAT_DTYPE"] = dtype
    return UpscalePipeline.from_weights(device="cuda")


def lora_pair(pipe: UpscalePipeline, tiny: bool) -> list[LoraSpec]:
    if tiny:
        from workers.tiny import upscale as tiny_parts

        folder = Path(tempfile.mkdtemp())
        for seed in (1, 2):
            tiny_parts.write_lora(tiny_parts.build_components(folder / "x")["unet"],
                                  folder / f"l{seed}.safetensors", seed)
        pipe.lora_dir = folder
    names = [m.name for m in models.list_models(pipe.lora_dir).models][:2]
    return [LoraSpec(name=n, weight=0.8) for n in names] if len(names) == 2 else []


def run(tiny: bool, repeats: int) -> list[Row]:
    size, steps = (64, 8) if tiny else (1024, 30)
    pipe = load(tiny)
    jobs = tiles(size, 4)
    base = RefineSettings(prompt="detailed game art", steps=steps, strength=0.35,
                          scheduler="dpmpp_2m_sde_karras", controlnet_scale=0.7)
    style = Image.fromarray(np.full((224, 224, 3), (200, 80, 40), np.uint8))
    rows: list[Row] = []

    def add(name: str, settings: RefineSettings, note: str = "") -> None:
        s, peak = measure(pipe, jobs, settings, repeats)
        rows.append(Row(name, s, peak, note))

    add("baseline (CN on, fp16/fp32 eager, SDPA)", base)
    add("ControlNet off", base.model_copy(update={"controlnet_scale": 0.0}))
    add("+ IP-Adapter style image", base.model_copy(update={"ip_adapter_image": style,
                                                                "ip_adapter_scale": 0.6}))
    loras = lora_pair(pipe, tiny)
    if loras:
        add("+ two LoRAs", base.model_copy(update={"loras": loras}))
    else:
        rows.append(Row("+ two LoRAs", float("nan"), None, "skipped: <2 LoRAs in the folder"))
    add("tile batch 4", base.model_copy(update={"batch_size": 4}))
    _variants(pipe, jobs, base, repeats, tiny, rows)
    return rows


def _variants(pipe: UpscalePipeline, jobs: list[TileJob], base: RefineSettings, repeats: int,
              tiny: bool, rows: list[Row]) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def timed(name: str, change: Callable[[], Any], note: str = "") -> None:
        change()
        s, peak = measure(pipe, jobs, base, repeats)
        rows.append(Row(name, s, peak, note))

    with sdpa_kernel(SDPBackend.MATH):  # what attention costs without fused SDPA kernels
        s, peak = measure(pipe, jobs, base, repeats)
        rows.append(Row("attention without fused SDPA kernels", s, peak))
    timed("channels_last UNet + ControlNet",
          lambda: [m.to(memory_format=torch.channels_last)
                   for m in (pipe.pipe.unet, pipe.pipe.controlnet)])
    if not tiny:
        timed("+ torch.compile UNet (max-autotune)", lambda: setattr(
            pipe.pipe, "unet", torch.compile(pipe.pipe.unet, mode="max-autotune")),
            "includes channels_last")
        del pipe
        torch.cuda.empty_cache()
        bf16 = load(False, "bf16")
        s, peak = measure(bf16, jobs, base, repeats)
        rows.append(Row("bf16 instead of fp16", s, peak))


def report(rows: list[Row], tiny: bool) -> None:
    base = rows[0].s_per_tile
    where = "tiny random parts on the CPU (ratios only exercise the harness)" if tiny else (
        torch.cuda.get_device_name())
    print(f"upscale worker, seconds per tile — {where}")
    print(f"{'configuration':<40} {'s/tile':>8} {'x baseline':>11} {'peak GB':>8}  note")
    for r in rows:
        peak = f"{r.peak_gb:8.2f}" if r.peak_gb is not None else f"{'-':>8}"
        print(f"{r.name:<40} {r.s_per_tile:8.3f} {r.s_per_tile / base:11.2f} {peak}  {r.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random parts on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (run on a GPU host, or pass --tiny to "
              "check the harness on the CPU)")
        return 0
    torch.manual_seed(0)
    report(run(args.tiny, args.repeats), args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
