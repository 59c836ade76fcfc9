"""The image-edit port of the ``animate`` job, and its two RunPod implementations.

:class:`EditBackend` edits one frame: the sprite on its key colour (``(H, W, 3) uint8``) and a
prompt in, an RGB image out (any size; the pipeline scales it to the cell). Implementations:

* :class:`WorkerEditBackend` — our own worker (``workers/animate``, diffusers'
  Qwen-Image-Edit) on a RunPod endpoint (``RUNPOD_ANIMATE_ENDPOINT_ID``); images inline.
* :class:`PublicEditBackend` — RunPod's public ``qwen-image-edit`` endpoint, which takes the
  image only as a URL: the canvas is put into the S3 artifact store and sent as a presigned
  GET URL; the answer's ``image_url`` (or ``result``) is downloaded at once (it expires).
  Without a bucket (``AAT_ARTIFACTS_URL=s3://...``) it refuses with ``edit_needs_url``.

A frame either answers is checked like any input image (:data:`FRAME_LIMITS`: size,
decompression bomb; a download is abandoned past :data:`MAX_FRAME_BYTES`) before it is decoded;
a refusal is a retryable ``edit_bad_output``.

:func:`open_edit_backend` picks one from the settings. Both speak RunPod's job API through
:class:`~service.backends.runpod.client.RunPodClient` (retries, polling, errors as data).

Every call fills the caller's :class:`~service.backends.base.CallAccounting` (RunPod job ids,
queue and execution milliseconds, cost: execution seconds x ``runpod_price_per_gpu_second``, or
the price the public endpoint reports in its output), failed calls included, and reports each
RunPod job id to ``on_submitted`` as soon as ``/run`` answers. A call that is cancelled
(asyncio cancellation: another frame failed, the job was canceled) cancels its RunPod job, so
no GPU time is spent on a frame nobody will use.

``resume`` picks up a frame's RunPod job that an interrupted attempt of the job submitted (the
id ``on_submitted`` reported, recorded on the frame's tile row): it re-polls that job through
the upscale tiles' re-poll (:func:`~service.backends.runpod.resume.repoll_output`) and reads
its output exactly as ``edit`` would, or answers None when RunPod no longer has a usable result
(then the frame is submitted afresh).
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import numpy as np
from PIL import Image, UnidentifiedImageError

from service.backends.base import CallAccounting, OnSubmitted, report_submitted
from service.backends.runpod.client import (
    PollPolicy,
    RetryPolicy,
    RunPodClient,
    cancel_quietly,
    outcome,
    submit_or_cancel,
)
from service.backends.runpod.resume import repoll_output
from service.core.contracts import AnimateRequest, AnimateResponse, ImageRef, PublicEditInput
from service.core.errors import BackendError, ConfigError, ImageError, WorkerError
from service.core.imaging import ImageLimits, probe_image
from service.settings import Settings

Publisher = Callable[[bytes], str]  # PNG bytes -> a URL the remote service can fetch
#: An edited frame is about AAT_ANIMATE_EDIT_SIDE (at most 2048 px) on its longest side; an
#: answer declaring far more is refused before it is decoded or downloaded whole.
FRAME_LIMITS = ImageLimits(max_input_pixels=4096 * 4096, max_input_side=4096)
MAX_FRAME_BYTES = 4096 * 4096 * 4 + 1024 * 1024  # an uncompressed RGBA frame at the limit


class EditBackend(Protocol):
    name: str  # "worker" or "public": part of a cached frame's key

    async def edit(self, frame_id: str, canvas: np.ndarray, prompt: str, seed: int, *,
                   acct: CallAccounting | None = None,
                   on_submitted: OnSubmitted | None = None) -> np.ndarray:
        """The edited frame, ``(H, W, 3) uint8``; what it cost is added to ``acct``."""
        ...

    async def resume(self, frame_id: str, remote_id: str, *,
                     acct: CallAccounting | None = None) -> np.ndarray | None:
        """The edited frame of RunPod job ``remote_id``, which an earlier (interrupted) attempt
        submitted and paid for (its cost is added to ``acct``, its id counted there once
        more, which the job's record knows already); None when it cannot be used: the caller
        calls :meth:`edit` instead."""
        ...

    async def health(self) -> dict[str, Any]:
        """The endpoint's ``/health`` (workers, jobs) with its ``id``."""
        ...

    async def aclose(self) -> None: ...


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_rgb(data: bytes, what: str) -> np.ndarray:
    """An edited frame as ``(H, W, 3) uint8``; its header is checked against
    :data:`FRAME_LIMITS` (size, decompression bomb) before a pixel is decoded."""
    try:
        probe_image(data, FRAME_LIMITS)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImageError as exc:
        raise WorkerError(f"{what} is not a usable image: {exc.message}",
                          code="edit_bad_output", retryable=True) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise WorkerError(f"{what} is not an image ({exc})", code="edit_bad_output",
                          retryable=True) from exc


def _client(s: Settings, endpoint_id: str, setting: str) -> RunPodClient:
    assert s.runpod_api_key is not None  # check_edit_setup ran
    return RunPodClient(
        s.runpod_base_url, endpoint_id, s.runpod_api_key,
        retry=RetryPolicy(s.runpod_http_attempts, s.runpod_backoff_base_s, s.runpod_backoff_max_s),
        poll=PollPolicy(s.runpod_poll_min_s, s.runpod_poll_max_s, s.runpod_ttl_s + 60.0),
        http=httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0)), setting=setting,
    )


async def _call(client: RunPodClient, payload: dict[str, Any], price_per_s: float,
                acct: CallAccounting | None, on_submitted: OnSubmitted | None) -> Any:
    """One RunPod job: submit, wait, account; cancelled, it cancels the RunPod job."""
    acct = acct if acct is not None else CallAccounting()

    def ambiguous() -> None:
        acct.possibly_billed += 1

    started = time.monotonic()
    job_id = await submit_or_cancel(client, payload, on_ambiguous=ambiguous)
    acct.remote_job_ids.append(job_id)
    acct.attempts += 1
    try:
        await report_submitted(on_submitted, job_id)
        body = await client.wait(job_id, submitted_at=started)
    except BaseException:  # cancelled (another frame failed, the job was canceled) or stuck
        await cancel_quietly(client, job_id)
        raise
    _account(acct, body, price_per_s)
    return outcome(body)


def _account(acct: CallAccounting, body: dict[str, Any], price_per_s: float) -> None:
    """Queue and execution time of a finished RunPod job, and its price: the one the output
    reports (RunPod's public endpoint prices per image), else GPU seconds x ``price_per_s``."""
    execution_ms = int(body.get("executionTime") or 0)
    acct.delay_ms += int(body.get("delayTime") or 0)
    acct.execution_ms += execution_ms
    output = body.get("output")
    reported = output.get("cost") if isinstance(output, dict) else None
    acct.cost_usd += (float(reported) if isinstance(reported, int | float)  # priced per image
                      else execution_ms / 1000.0 * price_per_s)


class _OnRunPod:
    """What both edit backends share: their RunPod client, price, and :meth:`resume`, which
    reads a re-polled job's output with the backend's own ``_read``."""

    _client: RunPodClient
    _price: float

    async def _read(self, output: Any, frame_id: str) -> np.ndarray:
        raise NotImplementedError

    async def health(self) -> dict[str, Any]:
        return {"id": self._client.endpoint_id, **await self._client.health()}

    async def resume(self, frame_id: str, remote_id: str, *,
                     acct: CallAccounting | None = None) -> np.ndarray | None:
        async def read(output: Any) -> np.ndarray:
            return await self._read(output, frame_id)

        found = await repoll_output(self._client, remote_id, read, "RunPod edit job")
        if found is None:
            return None
        frame, body = found
        acct = acct if acct is not None else CallAccounting()
        acct.remote_job_ids.append(remote_id)
        acct.attempts += 1
        _account(acct, body, self._price)
        return frame


class WorkerEditBackend(_OnRunPod):
    """Our ``workers/animate`` on a RunPod endpoint: one frame per RunPod job."""

    name = "worker"

    def __init__(self, client: RunPodClient, *, steps: int = 30,
                 price_per_s: float = 0.0) -> None:
        self._client, self._steps, self._price = client, steps, price_per_s

    async def edit(self, frame_id: str, canvas: np.ndarray, prompt: str, seed: int, *,
                   acct: CallAccounting | None = None,
                   on_submitted: OnSubmitted | None = None) -> np.ndarray:
        req = AnimateRequest(frame_id=frame_id, prompt=prompt, seed=seed, steps=self._steps,
                             image=ImageRef(b64=base64.b64encode(png_bytes(canvas)).decode()))
        output = await _call(self._client, req.model_dump(mode="json", exclude_none=True),
                             self._price, acct, on_submitted)
        return await self._read(output, frame_id)

    async def _read(self, output: Any, frame_id: str) -> np.ndarray:
        """Our worker's output: the frame inline."""
        try:
            resp = AnimateResponse.model_validate(output)
        except ValueError as exc:
            raise WorkerError(f"the animate worker answered frame {frame_id} with an "
                              "unexpected shape", code="edit_bad_output", retryable=True) from exc
        return decode_rgb(base64.b64decode(resp.image.b64 or ""), f"frame {frame_id}")

    async def aclose(self) -> None:
        await self._client.aclose()


class PublicEditBackend(_OnRunPod):
    """RunPod's public Qwen-Image-Edit endpoint: the canvas goes as a URL from ``publish``."""

    name = "public"

    def __init__(self, client: RunPodClient, publish: Publisher, *,
                 price_per_s: float = 0.0) -> None:
        self._client, self._publish, self._price = client, publish, price_per_s
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0),
                                       follow_redirects=True)

    async def edit(self, frame_id: str, canvas: np.ndarray, prompt: str, seed: int, *,
                   acct: CallAccounting | None = None,
                   on_submitted: OnSubmitted | None = None) -> np.ndarray:
        url = await asyncio.to_thread(self._publish, png_bytes(canvas))  # boto3 blocks
        req = PublicEditInput(prompt=prompt, image=url, seed=seed, output_format="png")
        try:
            output = await _call(self._client, req.model_dump(mode="json"), self._price, acct,
                                 on_submitted)
        except WorkerError as exc:
            if "image url" not in exc.message.lower():
                raise
            raise ConfigError(
                f"RunPod's public endpoint could not fetch the sprite from "
                f"{httpx.URL(url).host}: the object store must be reachable from the internet "
                "(AWS S3 or R2, not a local MinIO); set AAT_S3_ENDPOINT_URL to a public "
                "endpoint, or use your own worker with RUNPOD_ANIMATE_ENDPOINT_ID",
                code="edit_url_unreachable") from exc
        return await self._read(output, frame_id)

    async def _read(self, output: Any, frame_id: str) -> np.ndarray:
        """The public endpoint's output: a link to the frame, downloaded at once (it expires)."""
        link = output.get("image_url") or output.get("result") if isinstance(output, dict) else None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise WorkerError(f"the public edit endpoint returned no image URL for frame "
                              f"{frame_id}", code="edit_bad_output", retryable=True)
        try:
            data = await self._download(link, frame_id)
        except httpx.HTTPError as exc:
            raise BackendError(f"could not download frame {frame_id} from the public endpoint "
                               f"({type(exc).__name__})", code="edit_download_failed",
                               retryable=True) from exc
        return decode_rgb(data, f"frame {frame_id}")

    async def _download(self, link: str, frame_id: str) -> bytes:
        """The frame's bytes, abandoned past :data:`MAX_FRAME_BYTES`."""
        data = bytearray()
        async with self._http.stream("GET", link) as resp:
            resp.raise_for_status()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > MAX_FRAME_BYTES:
                    raise WorkerError(f"frame {frame_id} from the public endpoint is larger "
                                      f"than {MAX_FRAME_BYTES} bytes; it was not kept",
                                      code="edit_bad_output", retryable=True)
        return bytes(data)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._client.aclose()


def s3_publisher(settings: Settings) -> Publisher:
    """Canvas -> presigned GET URL in the configured bucket (:func:`check_edit_setup` has
    made sure there is one)."""
    from service.storage.stores import open_artifacts  # noqa: PLC0415 - boto3 only when used

    store: Any = open_artifacts(settings)
    store.probe()  # an unreachable or refusing bucket fails here, before any frame

    def publish(data: bytes) -> str:
        key = store.put_bytes("inputs", data, ".png")
        return str(store.presigned_url("inputs", key, ".png",
                                       expires_s=settings.animate_url_expiry_s))

    return publish


def edit_backend_kind(settings: Settings) -> str:
    """``worker`` or ``public``: what :func:`open_edit_backend` opens (its ``name``)."""
    if settings.animate_backend != "auto":
        return settings.animate_backend
    return "worker" if settings.runpod_animate_endpoint_id else "public"


def check_edit_setup(settings: Settings) -> None:
    """Raise the :class:`ConfigError` that makes every frame fail, from the settings alone (no
    network): our worker without its endpoint id, the public endpoint without a bucket
    (``edit_needs_url``), no RunPod key. :func:`open_edit_backend` and the API's submit ask
    here, so a job that cannot run is refused before it is queued."""
    kind = edit_backend_kind(settings)
    if kind == "worker" and not settings.runpod_animate_endpoint_id:
        raise ConfigError("AAT_ANIMATE_BACKEND=worker needs RUNPOD_ANIMATE_ENDPOINT_ID "
                          "(the endpoint running workers/animate)", code="config_missing")
    if kind == "public" and not settings.artifacts_url:
        raise ConfigError(
            "RunPod's public edit endpoint fetches the sprite from a URL, and no object store "
            "is configured: set AAT_ARTIFACTS_URL=s3://bucket/prefix (with AAT_S3_ENDPOINT_URL "
            "and credentials for R2/MinIO), or use your own worker with "
            "RUNPOD_ANIMATE_ENDPOINT_ID", code="edit_needs_url")
    if settings.runpod_api_key is None:
        raise ConfigError("animate needs RUNPOD_API_KEY (the key of your RunPod account)")


def open_edit_backend(settings: Settings) -> EditBackend:
    """The configured edit backend (``AAT_ANIMATE_BACKEND``; auto = our worker if its
    endpoint is set, else the public endpoint)."""
    check_edit_setup(settings)
    kind = edit_backend_kind(settings)
    if kind == "worker":
        assert settings.runpod_animate_endpoint_id is not None
        return WorkerEditBackend(_client(settings, settings.runpod_animate_endpoint_id,
                                         "RUNPOD_ANIMATE_ENDPOINT_ID"),
                                 price_per_s=settings.runpod_price_per_gpu_second)
    publish = s3_publisher(settings)
    return PublicEditBackend(_client(settings, settings.runpod_edit_public_slug,
                                     "AAT_RUNPOD_EDIT_PUBLIC_SLUG"), publish,
                             price_per_s=settings.runpod_price_per_gpu_second)
