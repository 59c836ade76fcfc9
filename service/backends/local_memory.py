"""Where the `local` backend keeps its models: both on the GPU, or one at a time.

SDXL + ControlNet + IP-Adapter (~12-13 GB in fp16) and a Qwen VL captioner (Qwen3-VL-8B:
~17.5 GB in bf16) do not fit together on a 24 GB card, and captions are on by default. A model
needs about its weight bytes plus working memory for one call (:data:`WORK_GB`: a 1024 px tile
at batch 1; a 448 px caption). :func:`plan` decides from those numbers and the card's memory:
both resident when they fit together, else one on the GPU at a time (the other parked in CPU
memory: the captioner after captioning, SDXL while captioning), else it says what does not fit.
Pure: sizes in, decision out; the backend measures, ``aat doctor`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORK_GB = {"upscale": 3.0, "caption": 1.5}
USABLE = 0.92  # of the card's memory: the CUDA context and fragmentation take the rest


@dataclass(frozen=True)
class Placement:
    together: bool  # both models stay on the GPU
    fits: dict[str, bool]  # each model alone
    need_gb: dict[str, float]
    usable_gb: float

    def describe(self) -> str:
        need = ", ".join(f"{k} {v:.1f} GB" for k, v in self.need_gb.items())
        where = f"needs {need} of {self.usable_gb:.1f} GB usable"
        if self.together:
            return f"both models stay on the GPU ({where})"
        too_big = [k for k, ok in self.fits.items() if not ok]
        if too_big:
            fix = {"caption": "a smaller AAT_CAPTION_MODEL or caption=false",
                   "upscale": "a GPU with more memory or the runpod backend"}
            return (f"{' and '.join(too_big)} does not fit ({where}); use "
                    + "; ".join(fix[k] for k in too_big))
        return f"one model on the GPU at a time, the other parked in CPU memory ({where})"


def plan(total_gb: float, weights_gb: dict[str, float]) -> Placement:
    """Placement of the models named in ``weights_gb`` (weight bytes in GB) on a card of
    ``total_gb``; a model absent from ``weights_gb`` is not used."""
    usable = total_gb * USABLE
    need = {k: round(v + WORK_GB[k], 1) for k, v in weights_gb.items()}
    return Placement(together=sum(need.values()) <= usable,
                     fits={k: v <= usable for k, v in need.items()},
                     need_gb=need, usable_gb=round(usable, 1))


def weights_on_disk_gb(weights_dir: Path) -> dict[str, float]:
    """Weight bytes per model from the baked folders (fp16/bf16 on disk = bytes in memory)."""
    from workers.caption import weights as caption_weights  # torch-free manifests
    from workers.upscale import weights as upscale_weights

    def size(folders: list[Path]) -> float:
        return sum(p.stat().st_size for f in folders if f.is_dir()
                   for p in f.rglob("*.safetensors")) / 1e9

    baked = weights_dir / upscale_weights.DIFFUSERS_FOLDER
    upscale = [baked] + [upscale_weights.local_path(name, weights_dir)
                         for name in upscale_weights.UPSCALE_COMPONENTS
                         if not (name == "base" and baked.is_dir())]  # converted: not loaded
    sizes = {"upscale": size(upscale),
             "caption": size([caption_weights.local_path("caption", weights_dir)])}
    return {k: round(v, 2) for k, v in sizes.items() if v > 0}
