"""The diffusion knobs are declared once (``DiffusionSettings``) and every layer takes them whole.

Four layers carry them: the job parameters, the worker contract, the backends' options and the
worker pipeline's settings. These tables fail if one layer re-declares a knob with another
default or limit, or drops one on the way from a job to the worker.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from service.core.params import DiffusionSettings, LoraSpec, UpscaleParams

LAYERS = [
    "service.core.params:UpscaleParams",
    "service.core.contracts:UpscaleRequest",
    "service.backends.base:RefineOptions",
    "workers.upscale.pipeline:RefineSettings",  # torch: the real worker module
]

# one value per knob that differs from its default and is inside its limits
CHANGED: dict[str, Any] = {
    "prompt": "mossy stone", "negative_prompt": "blurry", "strength": 0.6, "steps": 12,
    "cfg_scale": 4.5, "scheduler": "euler_a", "clip_skip": 3, "controlnet_scale": 1.1,
    "ip_adapter_scale": 0.4, "ip_adapter_mode": "style", "quality": "fast", "loras": [LoraSpec(name="detail", weight=0.5)],
}
# one value per knob just outside its limits
OUTSIDE: dict[str, Any] = {
    "prompt": "x" * 4001, "negative_prompt": "x" * 4001, "strength": 1.01, "steps": 101,
    "cfg_scale": 0.5, "scheduler": "plms", "clip_skip": 13, "controlnet_scale": 2.5,
    "ip_adapter_scale": -0.1, "ip_adapter_mode": "layout", "quality": "turbo", "loras": [LoraSpec(name=f"l{i}") for i in range(9)],
}


def layer(path: str) -> type[BaseModel]:
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseModel)
    return cls


def minimal(cls: type[BaseModel]) -> dict[str, Any]:
    """The fields a layer needs besides the knobs (the contract needs one tile)."""
    if cls.__name__ == "UpscaleRequest":
        return {"tiles": [{"tile_id": "0_0", "image": {"b64": "AA=="}, "seed": 1}]}
    return {}


def test_the_tables_cover_every_declared_knob() -> None:
    assert set(CHANGED) == set(OUTSIDE) == set(DiffusionSettings.model_fields)


@pytest.mark.parametrize("path", LAYERS)
def test_every_layer_takes_the_knobs_from_the_one_declaration(path: str) -> None:
    cls = layer(path)
    assert issubclass(cls, DiffusionSettings)
    for name, declared in DiffusionSettings.model_fields.items():
        field = cls.model_fields[name]
        assert (field.annotation, field.default, field.default_factory, field.metadata) == (
            declared.annotation, declared.default, declared.default_factory, declared.metadata
        ), f"{path} re-declares {name}"


@pytest.mark.parametrize("path", LAYERS)
@pytest.mark.parametrize("knob", sorted(OUTSIDE))
def test_every_layer_refuses_the_same_out_of_range_value(path: str, knob: str) -> None:
    cls = layer(path)
    cls(**minimal(cls))  # the defaults are valid everywhere
    cls(**minimal(cls), **{knob: CHANGED[knob]})
    with pytest.raises(ValidationError, match=knob):
        cls(**minimal(cls), **{knob: OUTSIDE[knob]})


def test_a_jobs_knobs_reach_both_backends_requests_unchanged() -> None:
    from service.backends.local import _settings as local_settings
    from service.core.contracts import UpscaleRequest
    from service.pipeline.stages import refine_options

    params = UpscaleParams(**CHANGED, seed=9, caption=False)
    options = refine_options(params)
    assert options.diffusion_kwargs() == CHANGED
    # the RunPod backend sends UpscaleRequest(**options.diffusion_kwargs(), tiles=...)
    request = UpscaleRequest(**options.diffusion_kwargs(), **minimal(UpscaleRequest))
    wire = UpscaleRequest.model_validate_json(request.model_dump_json())  # what the worker reads
    assert wire.diffusion_kwargs() == CHANGED
    assert local_settings(options, 3).diffusion_kwargs() == CHANGED  # the local GPU's pipeline



def test_aat_upscale_offers_the_declared_defaults() -> None:
    import inspect

    from service.cli.upscale import upscale

    options = inspect.signature(upscale).parameters
    for name in ("prompt", "negative_prompt", "strength", "steps", "cfg_scale"):
        assert options[name].default.default == DiffusionSettings.model_fields[name].default


def test_detected_pixel_art_is_diffused_when_the_job_names_loras() -> None:
    """LoRAs act only in diffusion: an auto-detected pixel-art sprite with LoRAs takes the
    (palette-locked) diffusion path and says why; without LoRAs, or with the type or the
    diffusion switch set by the user, detection decides as before."""
    import numpy as np

    sprite = np.zeros((8, 8, 3), np.uint8)
    sprite[2:6, 2:6] = (200, 40, 40)
    with_lora = UpscaleParams(scale=2, loras=[LoraSpec(name="moss")]).resolved_for(
        "hero.png", sprite)
    assert with_lora.asset_type == "pixel_art" and with_lora.diffuses
    assert "LoRAs" in (with_lora.asset_reason or "")
    plain = UpscaleParams(scale=2).resolved_for("hero.png", sprite)
    assert plain.asset_type == "pixel_art" and not plain.diffuses
    off = UpscaleParams(scale=2, loras=[LoraSpec(name="moss")], diffusion=False).resolved_for(
        "hero.png", sprite)
    assert not off.diffuses
