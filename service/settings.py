"""The one settings class of the service, read once at start and passed down.

Sources, highest priority first: keyword arguments, environment variables (``AAT_*``, plus the
seed's ``RUNPOD_API_KEY`` / ``RUNPOD_UPSCALE_ENDPOINT_ID`` / ``RUNPOD_CAPTION_ENDPOINT_ID``),
a ``.env`` file, then ``aat.toml`` (path from ``AAT_CONFIG``, else ``./aat.toml``).
Secrets are ``SecretStr`` and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from service.core.errors import ConfigError

if TYPE_CHECKING:
    from service.core.imaging import ImageLimits


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ai-assets-toolbox"


def _toml_path() -> Path:
    return Path(os.environ.get("AAT_CONFIG", "aat.toml"))


def toml_path() -> Path:
    """The ``aat.toml`` these settings read (``AAT_CONFIG``, else ``./aat.toml``)."""
    return _toml_path()


class Settings(BaseSettings):
    """All knobs of one deployable (API, job runner, watcher, CLI)."""

    model_config = SettingsConfigDict(
        env_prefix="AAT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # where things live
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: sqlite file in data_dir
    broker_url: str | None = None  # redis://...; None = embedded executor

    # shared artifact store (several hosts)
    artifacts_url: str | None = Field(  # s3://bucket/prefix; None = data_dir/artifacts
        default=None, pattern=r"^s3://[^/]+(/.*)?$")
    s3_endpoint_url: str | None = None  # MinIO, R2, ...; None = AWS
    s3_region: str | None = None  # None = us-east-1 (R2: auto)
    s3_access_key_id: str | None = Field(  # None = boto3's chain (instance role, ~/.aws)
        default=None, validation_alias=AliasChoices("AAT_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AAT_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"))

    # HTTP API
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    api_token: SecretStr | None = None
    server_url: str = "http://127.0.0.1:8765"  # where clients find the API; default: AAT_HOST:AAT_PORT
    cors_origins: list[str] = Field(default_factory=list)

    # GPU backend
    backend: Literal["auto", "none", "runpod", "local"] = "auto"
    runpod_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RUNPOD_API_KEY", "AAT_RUNPOD_API_KEY")
    )
    runpod_upscale_endpoint_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RUNPOD_UPSCALE_ENDPOINT_ID", "AAT_RUNPOD_UPSCALE_ENDPOINT_ID"),
    )
    runpod_caption_endpoint_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RUNPOD_CAPTION_ENDPOINT_ID", "AAT_RUNPOD_CAPTION_ENDPOINT_ID"),
    )
    # animate: our own Qwen-Image-Edit worker, or RunPod's public endpoint (images by URL)
    runpod_animate_endpoint_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RUNPOD_ANIMATE_ENDPOINT_ID", "AAT_RUNPOD_ANIMATE_ENDPOINT_ID"),
    )
    runpod_edit_public_slug: str = "qwen-image-edit"  # RunPod's public endpoint (by URL)
    animate_backend: Literal["auto", "worker", "public"] = "auto"  # auto: worker if configured
    animate_edit_side: int = Field(default=1024, ge=64, le=2048)  # longest side the model sees
    animate_url_expiry_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)  # presigned GET
    runpod_base_url: str = "https://api.runpod.ai/v2"
    runpod_max_concurrency: int | None = Field(default=None, ge=1, le=256)
    runpod_price_per_gpu_second: float = Field(default=0.00076, ge=0.0)  # USD
    runpod_execution_timeout_s: int = Field(default=600, ge=5)
    runpod_ttl_s: int = Field(default=3600, ge=60)
    runpod_tile_attempts: int = Field(default=3, ge=1, le=10)
    runpod_tiles_per_job: int = Field(default=1, ge=1, le=4)  # tiles waiting for a slot share a job
    runpod_http_attempts: int = Field(default=6, ge=1, le=20)  # per HTTP call (429/5xx/network)
    runpod_backoff_base_s: float = Field(default=0.5, gt=0)  # jittered exponential backoff
    runpod_backoff_max_s: float = Field(default=10.0, gt=0)
    runpod_poll_min_s: float = Field(default=0.02, gt=0)  # /status polling interval bounds
    runpod_poll_max_s: float = Field(default=2.0, gt=0)

    # RunPod provisioning (`aat deploy runpod`)
    runpod_rest_url: str = "https://api.runpod.io/v2"  # management API (not the job API host)
    deploy_name_prefix: str = Field(default="aat", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    deploy_upscale_image: str | None = None  # e.g. registry/aat-upscale:0.1.0
    deploy_caption_image: str | None = None  # None = no caption endpoint
    deploy_upscale_gpu_pools: list[str] = Field(  # RunPod GPU pool ids, first = preferred
        default_factory=lambda: ["ADA_24", "AMPERE_48"])
    deploy_caption_gpu_pools: list[str] = Field(
        default_factory=lambda: ["ADA_24", "AMPERE_24"])
    deploy_workers_min: int = Field(default=0, ge=0, le=100)  # always-on (billed) workers
    deploy_workers_max: int = Field(default=3, ge=1, le=100)
    deploy_idle_timeout_s: int = Field(default=5, ge=1, le=3600)
    deploy_flashboot: bool = True
    deploy_network_volume_id: str | None = None  # LoRAs for the upscale worker; pins its region
    deploy_disk_gb: int = Field(default=20, ge=1, le=500)  # container disk per worker

    # input/output limits
    max_input_pixels: int = Field(default=64_000_000, ge=1)
    max_input_side: int = Field(default=16384, ge=1)
    max_output_side: int = Field(default=16384, ge=1, le=65536)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_model_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)  # LoRA uploads and imports
    upload_max_age_s: float = Field(default=24 * 3600.0, gt=0)  # unfinished chunked LoRA uploads are removed after
    png_compress_level: int = Field(default=3, ge=0, le=9)  # zlib level of PNG outputs

    # LoRA import by URL (the upscale worker downloads onto its volume)
    civitai_token: SecretStr | None = None  # CivitAI API key, sent as a bearer header to CivitAI only
    hf_token: SecretStr | None = Field(  # Hugging Face read token (gated or private repos)
        default=None, validation_alias=AliasChoices("AAT_HF_TOKEN", "HF_TOKEN"))
    civitai_base_url: str = Field(  # where CivitAI's site and API are (tests: a stand-in)
        default="https://civitai.com", pattern=r"^https?://[^?#]+$")
    huggingface_base_url: str = Field(  # where Hugging Face is (tests: a stand-in)
        default="https://huggingface.co", pattern=r"^https?://[^?#]+$")
    lora_import_http_hosts: list[str] = Field(  # host:port allowed over plain http (local stand-ins only)
        default_factory=list)
    lora_import_timeout_s: int = Field(default=3600, ge=60)  # RunPod executionTimeout of one import
    lora_import_max_redirects: int = Field(default=5, ge=0, le=10)  # hops followed per download

    # delivery
    repos: dict[str, Path] = Field(default_factory=dict)
    intake_roots: Annotated[list[Path], NoDecode] = Field(  # paths a JSON submission may name
        default_factory=list)
    git_commit: bool = False

    # watcher
    watch_folders: Annotated[list[Path], NoDecode] = Field(  # one path, a:b, or a JSON list
        default_factory=list)
    watch_scan_interval_s: float = Field(default=30.0, gt=0)
    watch_stable_s: float = Field(default=2.0, ge=0)
    watch_polling: bool = False  # polling observer (network drives)
    watch_delivery: Literal["auto", "service", "download"] = "auto"  # auto: download if remote

    # `local` GPU backend (worker pipelines in-process)
    local_device: str = Field(default="cuda", pattern=r"^(cuda(:\d+)?|cpu)$")
    local_weights_dir: Path | None = None  # default: data_dir/weights
    local_lora_dir: Path | None = None  # default: data_dir/loras
    local_batch_size: int = Field(default=1, ge=1, le=16)  # tiles per diffusion call
    local_vram_gb: float | None = Field(default=None, gt=0, le=1024)  # default: the card's total

    # logs
    log_format: Literal["text", "json"] = "text"  # json: one object per line, job id a field

    # job execution
    job_threads: int = Field(default=2, ge=1, le=64)
    lease_s: float = Field(default=60.0, gt=1)
    job_max_attempts: int = Field(default=5, ge=1, le=100)  # runner crashes before giving up
    celery_queue: str = "aat"
    visibility_timeout_s: int = Field(default=6 * 3600, ge=60)  # > longest job
    gc_days: float = Field(default=14.0, ge=0)  # `aat gc`: artifacts of jobs finished earlier

    @field_validator("watch_folders", "intake_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        """A JSON list, or one path, or paths joined by the OS path separator (``:``)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)  # a bad list is a ValueError naming the setting
        return [p for p in text.split(os.pathsep) if p.strip()]

    @model_validator(mode="after")
    def _server_url_from_port(self) -> Settings:
        """Clients on this machine find the API at AAT_HOST:AAT_PORT unless AAT_SERVER_URL
        says otherwise (a wildcard bind is reached on loopback)."""
        if "server_url" not in self.model_fields_set:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
            host = f"[{host}]" if ":" in host else host
            self.server_url = f"http://{host}:{self.port}"
        return self

    @field_validator("repos")
    @classmethod
    def _repos_absolute(cls, value: dict[str, Path]) -> dict[str, Path]:
        return {name: Path(path).expanduser().resolve() for name, path in value.items()}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_path()),
        )

    # derived values
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aat.db'}"

    @property
    def effective_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        if self.runpod_api_key and self.runpod_upscale_endpoint_id:
            return "runpod"
        return "none"

    def image_limits(self) -> ImageLimits:
        """The input and output size limits every intake and decode applies."""
        from service.core.imaging import ImageLimits  # numpy/Pillow only when asked

        return ImageLimits(max_input_pixels=self.max_input_pixels,
                           max_input_side=self.max_input_side,
                           max_output_side=self.max_output_side)

    def intake_folders(self) -> list[Path]:
        """The folders a submission by path may name: the intake roots and the repos."""
        return [*self.intake_roots, *self.repos.values()]

    def can_caption(self, backend: str) -> bool:
        """Whether ``backend`` has a captioner: RunPod needs a caption endpoint of its own."""
        return backend != "runpod" or bool(self.runpod_caption_endpoint_id)


def load_settings(**overrides: Any) -> Settings:
    """Read settings once; a bad value raises :class:`ConfigError` naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        env = "AAT_" + where.upper() if where != "settings" else where
        msg = str(first.get("msg")).removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {where} ({env}): {msg}; fix it in the environment "
                          f"or in {_toml_path()}") from exc
    except SettingsError as exc:  # a value the environment or .env holds cannot be parsed
        raise ConfigError(_settings_error(exc)) from exc
    except (OSError, ValueError) as exc:  # e.g. a malformed aat.toml
        raise ConfigError(f"could not read settings: {exc}; check {_toml_path()}") from exc


def _settings_error(exc: SettingsError) -> str:
    """Name the setting and where it came from (the environment, .env or aat.toml)."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if found is None:
        return f"could not read settings: {exc}; check the AAT_* variables and {_toml_path()}"
    field, source = found.groups()
    where = {"EnvSettingsSource": "the environment", "DotEnvSettingsSource": ".env"}.get(
        source, str(_toml_path()))
    return (f"invalid setting {field} (AAT_{field.upper()}) in {where}: not a valid value "
            "for this setting (lists and tables are JSON, e.g. '[\"/path/a\", \"/path/b\"]')")
