"""Versioned wire contracts between the service and the GPU workers (torch-free).

A RunPod job's ``input`` is one of the ``*Request`` models below, dumped with
``model_dump(mode="json")``; a worker's ``output`` is the matching ``*Response``. A worker that
fails returns ``{"error": "<json string of WorkerErrorData>"}`` (RunPod requires a string there;
a dict would end COMPLETED without output). Unknown fields are rejected on both sides, so a
misspelt knob is an error, never silently ignored (the seed's ControlNet bug).

Action names keep the seed's: upscale worker ``upscale``, ``list_models``, ``upload_model``,
``delete_model``, ``health`` (plus ``import_model``, new); caption worker ``caption``,
``health``.
Images travel as :class:`ImageRef`: inline base64 PNG/WebP bytes, or an http(s) URL.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from service.core.params import DiffusionSettings

CONTRACT_VERSION: Final = 1  # Final: typed as Literal[1], the models' version field
MAX_TILES_PER_CALL = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageRef(_Strict):
    """An image: exactly one of inline ``b64`` (no data-URI prefix) or ``url``."""

    b64: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _one(self) -> ImageRef:
        if (self.b64 is None) == (self.url is None):
            raise ValueError("an image needs exactly one of b64 or url")
        return self


class WorkerErrorData(_Strict):
    code: str
    message: str
    retryable: bool = False

    def to_output(self) -> dict[str, str]:
        """The handler return value that makes RunPod mark the job FAILED with this error."""
        return {"error": json.dumps(self.model_dump())}


# ---- upscale worker -------------------------------------------------------------------------


class TileIn(_Strict):
    tile_id: str = Field(min_length=1, max_length=64)
    image: ImageRef
    prompt: str = Field(default="", max_length=4000)  # caption / per-tile prompt (appended)
    seed: int = Field(ge=0, le=2**32 - 1)


class UpscaleRequest(DiffusionSettings):
    """Refine tiles; the job-wide knobs (prompt, strength, steps, ...) are DiffusionSettings'."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["upscale"] = "upscale"
    version: Literal[1] = CONTRACT_VERSION
    tiles: list[TileIn] = Field(min_length=1, max_length=MAX_TILES_PER_CALL)
    ip_adapter_image: ImageRef | None = None
    output_format: Literal["png", "webp"] = "png"
    batch_size: int = Field(default=1, ge=1, le=MAX_TILES_PER_CALL)  # tiles per diffusion call
    # the caller's idempotency key: the same work always carries the same key
    request_key: str | None = Field(default=None, max_length=128)


class TileOut(_Strict):
    tile_id: str
    image: ImageRef
    seed_used: int


class UpscaleResponse(_Strict):
    version: Literal[1] = CONTRACT_VERSION
    tiles: list[TileOut]


class ListModelsRequest(_Strict):
    action: Literal["list_models"] = "list_models"
    version: Literal[1] = CONTRACT_VERSION
    model_type: Literal["lora"] = "lora"


class ModelInfo(_Strict):
    name: str
    size_bytes: int
    sha256: str | None = None
    # words that switch the LoRA on: CivitAI's trainedWords (kept beside an imported file),
    # else the file's own metadata (modelspec.trigger_phrase, kohya's most frequent tags)
    trigger_words: list[str] = Field(default_factory=list)


class ListModelsResponse(_Strict):
    models: list[ModelInfo]


class UploadModelRequest(_Strict):
    action: Literal["upload_model"] = "upload_model"
    version: Literal[1] = CONTRACT_VERSION
    model_type: Literal["lora"] = "lora"
    filename: str = Field(min_length=1, max_length=200)
    file_b64: str
    chunk_index: int = Field(default=0, ge=0)
    total_chunks: int = Field(default=1, ge=1, le=10_000)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # of the whole file


class UploadModelResponse(_Strict):
    status: Literal["partial", "complete"]
    name: str
    size_bytes: int
    model: ModelInfo | None = None  # complete: the stored LoRA as the list describes it


class DeleteModelRequest(_Strict):
    action: Literal["delete_model"] = "delete_model"
    version: Literal[1] = CONTRACT_VERSION
    model_type: Literal["lora"] = "lora"
    name: str = Field(min_length=1, max_length=200)


class DeleteModelResponse(_Strict):
    status: Literal["deleted"]
    name: str


class ImportModelRequest(_Strict):
    """Download a LoRA onto the worker's volume (import by URL). The service resolves the
    user's URL (:mod:`service.core.lora_sources`); the worker fetches, checks and stores it,
    reporting :class:`ImportProgress` as RunPod progress updates while it runs."""

    action: Literal["import_model"] = "import_model"
    version: Literal[1] = CONTRACT_VERSION
    model_type: Literal["lora"] = "lora"
    source: Literal["civitai", "huggingface"]
    url: str = Field(min_length=1, max_length=2000)  # the user's URL without secrets
    # None for a CivitAI model page: the version (and its file) is chosen from metadata_url
    download_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    # CivitAI: the model version's JSON, or the model's (its newest published version is taken)
    metadata_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    name: str | None = Field(default=None, min_length=1, max_length=200)  # default: the file's
    max_bytes: int = Field(ge=1)
    http_hosts: list[str] = Field(default_factory=list, max_length=20)  # plain http allowed
    max_redirects: int = Field(default=5, ge=0, le=10)
    # sent only to the site's own origin, never to a storage host it redirects to
    civitai_token: str | None = Field(default=None, max_length=500, repr=False)
    hf_token: str | None = Field(default=None, max_length=500, repr=False)


class CivitaiVersion(_Strict):
    """The CivitAI model version an import downloads: the one its URL names, or, for a model
    page URL, the model's newest published version (the one CivitAI's site opens)."""

    model_id: int | None = None
    version_id: int
    name: str | None = Field(default=None, max_length=300)  # the version's name, e.g. "v2.0"
    base_model: str | None = Field(default=None, max_length=100)  # e.g. "SDXL 1.0"
    chosen: Literal["named", "newest"] = "named"  # named by the URL / the newest published


class ImportProgress(_Strict):
    """What a running import reports (the ``output`` of an IN_PROGRESS RunPod job)."""

    stage: Literal["resolving", "downloading", "checking"]
    bytes_done: int = 0
    bytes_total: int | None = None
    name: str | None = None
    version: CivitaiVersion | None = None  # CivitAI: once resolved


class ImportModelResponse(_Strict):
    status: Literal["complete"] = "complete"
    model: ModelInfo
    version: CivitaiVersion | None = None  # CivitAI: the version that was imported


class HealthRequest(_Strict):
    action: Literal["health"] = "health"
    version: Literal[1] = CONTRACT_VERSION


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    worker: Literal["upscale", "caption", "echo", "animate"]
    gpu: str | None = None
    vram_total_gb: float | None = None
    vram_used_gb: float | None = None
    model_loaded: bool = False


# ---- caption worker -------------------------------------------------------------------------


class CaptionTileIn(_Strict):
    tile_id: str = Field(min_length=1, max_length=64)
    image: ImageRef


class CaptionRequest(_Strict):
    action: Literal["caption"] = "caption"
    version: Literal[1] = CONTRACT_VERSION
    tiles: list[CaptionTileIn] = Field(min_length=1, max_length=MAX_TILES_PER_CALL)
    instruction: str | None = Field(default=None, max_length=2000)  # None = built-in
    max_new_tokens: int = Field(default=48, ge=1, le=300)
    # the caller's idempotency key: the same work always carries the same key
    request_key: str | None = Field(default=None, max_length=128)


class Caption(_Strict):
    tile_id: str
    caption: str


class CaptionResponse(_Strict):
    version: Literal[1] = CONTRACT_VERSION
    captions: list[Caption]


# ---- animate worker (Qwen-Image-Edit) -------------------------------------------------------


class AnimateRequest(_Strict):
    """One frame: edit ``image`` (the sprite on its key colour) as ``prompt`` says."""

    action: Literal["animate"] = "animate"
    version: Literal[1] = CONTRACT_VERSION
    frame_id: str = Field(min_length=1, max_length=64)
    image: ImageRef
    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str = Field(default="", max_length=4000)
    seed: int = Field(ge=0, le=2**32 - 1)
    steps: int = Field(default=30, ge=1, le=100)
    true_cfg_scale: float = Field(default=4.0, ge=1.0, le=20.0)
    output_format: Literal["png", "webp"] = "png"
    # the caller's idempotency key: the same work always carries the same key
    request_key: str | None = Field(default=None, max_length=128)


class AnimateResponse(_Strict):
    version: Literal[1] = CONTRACT_VERSION
    frame_id: str
    image: ImageRef
    seed_used: int


class PublicEditInput(_Strict):
    """The ``input`` of RunPod's public ``qwen-image-edit`` endpoint (the image as a URL);
    its output is ``{"image_url": ..., "cost": ...}`` (some models say ``result``)."""

    prompt: str = Field(min_length=1, max_length=4000)
    image: str = Field(pattern=r"^https?://")
    negative_prompt: str = Field(default="", max_length=4000)
    seed: int = Field(default=-1, ge=-1, le=2**32 - 1)
    output_format: Literal["png", "jpeg"] = "png"
    enable_safety_checker: bool = True


UpscaleWorkerRequest = Annotated[
    UpscaleRequest | ListModelsRequest | UploadModelRequest | DeleteModelRequest
    | ImportModelRequest | HealthRequest,
    Field(discriminator="action"),
]
CaptionWorkerRequest = Annotated[CaptionRequest | HealthRequest, Field(discriminator="action")]

upscale_worker_request: TypeAdapter[Any] = TypeAdapter(UpscaleWorkerRequest)
caption_worker_request: TypeAdapter[Any] = TypeAdapter(CaptionWorkerRequest)
AnimateWorkerRequest = Annotated[AnimateRequest | HealthRequest, Field(discriminator="action")]
animate_worker_request: TypeAdapter[Any] = TypeAdapter(AnimateWorkerRequest)
