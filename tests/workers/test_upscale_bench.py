"""`bench/gpu_tile.py`: the GPU speed bench runs start to finish on the CPU (CI proof).

The full-size SDXL UNet, ControlNet and VAE are built from the configs in the repository with
random weights; on a GPU host the same command without ``--device cpu`` measures 1024 px tiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # full-size SDXL components built on the CPU in a subprocess

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}  # hide any GPU
    return subprocess.run([sys.executable, str(ROOT / "bench/gpu_tile.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_gpu_bench_without_cuda_says_so_and_exits_0() -> None:
    out = bench(timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert "no CUDA GPU here" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_random_weight_bench_runs_full_size_sdxl_on_the_cpu() -> None:
    out = bench("--random-weights", "--device", "cpu", "--size", "256", "--steps", "2",
                "--repeats", "1", timeout=840)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])  # the last line is the JSON
    assert result["bench"] == "gpu_tile" and result["weights"] == "random"
    assert result["size"] == 256 and result["steps"] == 2 and result["strength"] > 0.35
    names = [row["name"] for row in result["rows"]]
    assert names[0].startswith("baseline") and result["rows"][0]["x_baseline"] == 1.0
    assert {"ControlNet off (skipped)", "tile batch 2", "tile batch 4",
            "style image (IP-Adapter Plus, scale 0.6)"} <= set(names)
    assert any(name.startswith("few-step") for name in names)
    assert all(row["s_per_tile"] > 0 for row in result["rows"])
    # the CPU proof's weights share values, in the dtype this CPU runs fastest
    assert result["shared_weights"] is True and result["dtype"] in ("bfloat16", "float32")


def test_full_size_parts_with_shared_values_have_sdxl_s_shapes_in_a_fraction_of_the_memory(
        ) -> None:
    """The CPU proof builds the real layouts (SDXL's UNet has 2,567,463,684 parameters) but
    weight matrices of one fan-in view one buffer: gigabytes of parameters, megabytes held."""
    import torch

    from workers.tiny import full_size

    parts = full_size.build_components("cpu", torch.float32, shared=True)
    counts = full_size.parameter_count(parts)
    assert counts["unet"] == 2_567_463_684
    assert counts["controlnet"] > 1_000_000_000 and counts["image_encoder"] > 600_000_000
    held: dict[int, int] = {}
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            for p in module.parameters():
                storage = p.untyped_storage()
                held[storage.data_ptr()] = storage.nbytes()
    total = sum(counts.values()) * 4
    assert sum(held.values()) < total / 10, (sum(held.values()), total)
    # the GPU's build: every weight its own memory, drawn ~ N(0, 1/fan_in) (the VAE: small)
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**full_size.config("vae"))
    gen = torch.Generator("cpu").manual_seed(0)
    own = full_size._materialise(vae, "cpu", torch.float32,
                                 full_size._drawer("cpu", torch.float32, gen, shared=False))
    weights = [p for p in own.parameters() if p.dim() > 1]
    assert len({p.untyped_storage().data_ptr() for p in weights}) == len(weights)
    conv = own.decoder.conv_in.weight
    assert abs(float(conv.std()) * conv[0].numel() ** 0.5 - 1.0) < 0.05
    plus = full_size.ip_adapter_plus_state_dict(parts["unet"], parts["image_encoder"],
                                                shared=True)
    assert plus["image_proj"]["latents"].shape[-1] == 1280
