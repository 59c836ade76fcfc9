"""HTTP layer for one RunPod serverless endpoint (the cloud and our emulator alike).

:class:`RunPodClient` speaks RunPod's job API (``/run``, ``/runsync``, ``GET /status``,
``/cancel``, ``/health``) over one ``httpx.AsyncClient`` and owns the first retry layer:
429 (honouring ``Retry-After``), 5xx and connect/read errors are retried with jittered
exponential backoff, a bounded number of times, then raise :class:`BackendUnavailable`.
A 401/403 raises :class:`BackendAuthError` at once; any other 4xx is permanent.
Request bodies are measured before sending: over :data:`MAX_RUN_BYTES` is a
``payload_too_large`` :class:`ParamsError`, never sent. :meth:`RunPodClient.wait` polls
``/status`` with short adaptive intervals (learned from the endpoint's recent run times) until
a terminal status, and :func:`outcome` turns that status into an output or a structured error.
The API key lives in a ``SecretStr`` and goes only into the ``authorization`` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from service.core.errors import (
    AatError,
    BackendAuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ParamsError,
    WorkerError,
    error_from_dict,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
MAX_RUN_BYTES = 9_500_000  # RunPod's /run limit is 10 MB; keep headroom
MAX_RUNSYNC_BYTES = 19_000_000  # /runsync: 20 MB
MAX_RETRY_AFTER_S = 60.0
LATE_ID_WAIT_S = 30.0  # how long a cancelled call waits for its /run reply, to cancel that job


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for one HTTP call."""

    attempts: int = 6
    base_s: float = 0.5
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based): half fixed, half random."""
        ceiling = min(self.max_s, self.base_s * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class PollPolicy:
    min_s: float = 0.05
    max_s: float = 2.0
    deadline_s: float = 3700.0  # give up waiting for a terminal status after this long

    def delay(self, elapsed: float, expected: float | None) -> float:
        """Next sleep, within ``[min_s, max_s]``: until the expected finish when one is known
        (then 5 % of the time waited, after a miss), else 10 % of the time waited so far."""
        if expected is None:
            wanted = 0.1 * elapsed
        elif elapsed < expected:
            wanted = expected - elapsed
        else:
            wanted = 0.05 * elapsed
        return min(self.max_s, max(self.min_s, wanted))


class RunPodClient:
    """One endpoint: ``{base_url}/{endpoint_id}/<op>`` with bearer auth."""

    def __init__(
        self,
        base_url: str,
        endpoint_id: str,
        api_key: SecretStr,
        *,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        setting: str = "RUNPOD_UPSCALE_ENDPOINT_ID / RUNPOD_CAPTION_ENDPOINT_ID",
    ) -> None:
        self.endpoint_id = endpoint_id
        self.setting = setting  # where the user sets endpoint_id (named when it is not found)
        self.url = f"{base_url.rstrip('/')}/{endpoint_id}"
        self._key = api_key
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        self._exec_s: float | None = None  # moving average of recent execution times
        self._exec_dev_s = 0.0  # moving average of their deviation from it

    def __repr__(self) -> str:
        return f"RunPodClient({self.url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- operations -------------------------------------------------------------------------

    async def run(self, payload: dict[str, Any], policy: dict[str, int] | None = None, *,
                  on_ambiguous: Callable[[], None] | None = None) -> str:
        """Submit a job with ``/run``; returns the RunPod job id. ``on_ambiguous`` is called for
        each failed attempt after which RunPod may still have queued the job (a 5xx, 408, or a
        reply lost after the request went out): the retry may then be a second job."""
        body = _encode({"input": payload, **({"policy": policy} if policy else {})},
                       MAX_RUN_BYTES, "/run")
        resp = await self._request("POST", "/run", content=body, on_ambiguous=on_ambiguous)
        return str(_json(resp, "/run", "id")["id"])

    async def runsync(self, payload: dict[str, Any], *, wait_ms: int = 60_000) -> dict[str, Any]:
        """Submit with ``/runsync``; the reply may still be non-terminal (then :meth:`wait`)."""
        body = _encode({"input": payload}, MAX_RUNSYNC_BYTES, "/runsync")
        resp = await self._request("POST", "/runsync", content=body, params={"wait": wait_ms})
        return _json(resp, "/runsync", "id")

    async def status(self, job_id: str) -> dict[str, Any]:
        """``GET /status/{id}``; a job RunPod no longer knows raises ``runpod_job_gone``."""
        gone = BackendError(
            f"RunPod job {job_id} is gone (result expired or TTL passed)",
            code="runpod_job_gone", retryable=True,
        )
        resp = await self._request("GET", f"/status/{job_id}", missing=gone)
        return _json(resp, "/status", "status")

    async def cancel(self, job_id: str) -> None:
        """``POST /cancel/{id}``; a job already gone is fine."""
        try:
            await self._request("POST", f"/cancel/{job_id}", missing=_Gone())
        except _Gone:
            return
        log.info("cancelled RunPod job %s on %s", job_id, self.endpoint_id)

    async def health(self) -> dict[str, Any]:
        return _json(await self._request("GET", "/health"), "/health", "workers")

    async def wait(self, job_id: str, first: dict[str, Any] | None = None,
                   submitted_at: float | None = None) -> dict[str, Any]:
        """Poll until the job is terminal; returns its last ``/status`` body.

        ``submitted_at`` (``time.monotonic()`` just before the submit request) anchors the
        expected finish time; without it, now.
        """
        start = submitted_at if submitted_at is not None else time.monotonic()
        body = first or {"status": "IN_QUEUE"}
        polled = first is not None
        while body.get("status") not in TERMINAL:
            elapsed = time.monotonic() - start
            if elapsed > self.poll.deadline_s:
                raise BackendTimeout(
                    f"RunPod job {job_id} still {body.get('status')} after {elapsed:.0f} s; "
                    "check the endpoint's workers in the RunPod console",
                    code="runpod_stuck",
                )
            await asyncio.sleep(self.poll.delay(elapsed, self._expected_finish(body, polled)))
            body, polled = await self.status(job_id), True
        if body["status"] == "COMPLETED":
            self._observe(body)
        return body

    def _expected_finish(self, body: dict[str, Any], polled: bool) -> float | None:
        """Seconds after submission the job should be done, from recent execution times.

        Before the first poll we assume it starts at once; once it runs, ``delayTime`` says when
        it started; while it is seen queued nobody knows (poll briefly, see PollPolicy).
        """
        if self._exec_s is None:
            return None
        run_s = self._exec_s + self._exec_dev_s  # most jobs are done by then
        if not polled:
            return run_s
        delay = body.get("delayTime")
        if body.get("status") == "IN_PROGRESS" and isinstance(delay, int | float):
            return delay / 1000.0 + run_s
        return None

    def _observe(self, body: dict[str, Any]) -> None:
        ms = body.get("executionTime")
        if isinstance(ms, int | float) and ms > 0:
            s = ms / 1000.0
            if self._exec_s is None:
                self._exec_s = s
            self._exec_dev_s = 0.7 * self._exec_dev_s + 0.3 * abs(s - self._exec_s)
            self._exec_s = 0.7 * self._exec_s + 0.3 * s

    # ---- transport --------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, content: bytes | None = None,
        params: dict[str, Any] | None = None, missing: Exception | None = None,
        on_ambiguous: Callable[[], None] | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self._key.get_secret_value()}"}
        if content is not None:
            headers["content-type"] = "application/json"
        last: AatError = BackendUnavailable(f"RunPod {path} was not attempted")
        for attempt in range(self.retry.attempts):
            wait = self.retry.delay(attempt)
            try:
                resp = await self._http.request(method, self.url + path, content=content,
                                                params=params, headers=headers)
            except httpx.TransportError as exc:
                if on_ambiguous is not None and not isinstance(
                        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                    on_ambiguous()  # the request may have reached RunPod
                last = BackendUnavailable(
                    f"could not reach RunPod at {self.url} ({type(exc).__name__}); "
                    "check the network or runpod_base_url",
                )
            else:
                if resp.status_code < 400:
                    return resp
                if on_ambiguous is not None and (resp.status_code >= 500
                                                 or resp.status_code == 408):
                    on_ambiguous()
                last, wait = self._classify(resp, path, missing, wait)
            if attempt + 1 < self.retry.attempts:
                log.info("RunPod %s %s: %s; retry in %.2f s", method, path, last.message, wait)
                await asyncio.sleep(wait)
        raise type(last)(
            f"{last.message} (gave up after {self.retry.attempts} tries)",
            code=last.code, retryable=True, retry_after=last.retry_after,
        )

    def _classify(self, resp: httpx.Response, path: str, missing: Exception | None,
                  wait: float) -> tuple[AatError, float]:
        """A retryable error and how long to wait, or raise for a permanent one."""
        code = resp.status_code
        if code in (401, 403):
            raise BackendAuthError(
                f"RunPod rejected the API key ({code}); set RUNPOD_API_KEY to a key with access "
                f"to endpoint {self.endpoint_id}",
            )
        if code == 429:
            after = _retry_after(resp)
            return BackendUnavailable("RunPod rate limit reached (429)", retry_after=after,
                                      code="runpod_rate_limited"), after if after is not None else wait
        if code >= 500 or code == 408:
            return BackendUnavailable(f"RunPod answered {code}", code="runpod_server_error"), wait
        if code == 404 and missing is not None:
            raise missing
        if code == 404:
            raise BackendError(
                f"RunPod endpoint {self.endpoint_id} not found at {self.url}; check the endpoint "
                f"id setting ({self.setting})",
                code="runpod_endpoint_not_found",
            )
        raise BackendError(
            f"RunPod refused {path} ({code}: {resp.text[:200]}); this request will not succeed "
            "as is",
            code="runpod_bad_request", detail={"status": code},
        )


async def cancel_quietly(client: RunPodClient, job_id: str) -> None:
    """Best effort: cancel the RunPod job so it stops costing money."""
    try:
        await asyncio.wait_for(asyncio.shield(client.cancel(job_id)), timeout=10.0)
    except (AatError, TimeoutError, asyncio.CancelledError) as exc:
        log.warning("could not cancel RunPod job %s: %s", job_id, exc)


async def submit_or_cancel(client: RunPodClient, payload: dict[str, Any],
                           policy: dict[str, int] | None = None, *,
                           on_ambiguous: Callable[[], None] | None = None,
                           on_late: Callable[[], None] | None = None) -> str:
    """``POST /run``; returns the RunPod job id. Cancelled while the POST is in flight, the job
    may exist anyway (RunPod created it; its id is on the way): wait for the id, bounded, call
    ``on_late`` and cancel that RunPod job at once rather than leave it running and billing."""
    post = asyncio.ensure_future(client.run(payload, policy, on_ambiguous=on_ambiguous))
    try:
        return await asyncio.shield(post)
    except asyncio.CancelledError:
        await _cancel_late(client, post, on_late)
        raise


async def _cancel_late(client: RunPodClient, post: asyncio.Future[str],
                       on_late: Callable[[], None] | None) -> None:
    try:
        job_id = await asyncio.wait_for(asyncio.shield(post), LATE_ID_WAIT_S)
    except Exception:  # no id came back (refused, timed out): nothing to cancel
        post.cancel()
        return
    if on_late is not None:
        on_late()
    log.info("RunPod job %s was created after its call was cancelled; cancelling it", job_id)
    await cancel_quietly(client, job_id)


class _Gone(Exception):
    """Internal: the job a cancel named no longer exists."""


def _encode(body: dict[str, Any], limit: int, route: str) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > limit:
        raise ParamsError(
            f"request of {len(data) / 1e6:.1f} MB is over RunPod's {route} limit "
            f"({limit / 1e6:.1f} MB usable); use a smaller tile_size",
            code="payload_too_large", detail={"bytes": len(data), "limit": limit},
        )
    return data


def _json(resp: httpx.Response, route: str, key: str) -> dict[str, Any]:
    """The reply as a dict holding ``key``, or a retryable error (a proxy's HTML page, ...)."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or key not in data:
        raise BackendUnavailable(
            f"RunPod answered {route} with something unexpected ({resp.text[:120]!r}); "
            "check runpod_base_url", code="runpod_bad_response",
        )
    return data


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        value = float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


# ---- terminal status → output or error -------------------------------------------------------


def outcome(body: dict[str, Any]) -> Any:
    """The ``output`` of a terminal status body, or the structured error it stands for."""
    job_id, status = body.get("id", "?"), body.get("status")
    if status == "COMPLETED":
        if body.get("output") is None:
            raise BackendError(
                f"RunPod job {job_id} completed without output (result lost or too large)",
                code="runpod_no_output", retryable=True,
            )
        return body["output"]
    if status == "FAILED":
        raise parse_worker_error(body.get("error"))
    if status == "TIMED_OUT":
        raise BackendTimeout(
            f"RunPod job {job_id} timed out (execution timeout or TTL reached)",
            code="runpod_timed_out",
        )
    raise BackendError(f"RunPod job {job_id} was cancelled outside this service",
                       code="runpod_cancelled")


def parse_worker_error(raw: Any) -> AatError:
    """A FAILED job's ``error`` as structured data.

    Shapes: our ``WorkerErrorData`` JSON string (``code``/``message``/``retryable``); the runpod
    SDK's uncaught-exception JSON (``error_type``/``error_message``/...); anything else is kept
    verbatim in ``detail["raw"]``.
    """
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
    if isinstance(data, dict) and "error_type" in data and "error_message" in data:
        # An exception our handler did not explain (its own refusals — bad input, unknown
        # LoRA — arrive as structured errors with retryable=False): the worker, not the tile,
        # may be at fault (a bad GPU, a half-loaded model), so the tile is resubmitted, to
        # whichever worker RunPod picks, a bounded number of times (AAT_RUNPOD_TILE_ATTEMPTS).
        etype = str(data["error_type"])
        return WorkerError(
            f"worker crashed: {_type_name(etype)}: {str(data['error_message'])[:300]}",
            code="worker_crashed", retryable=True,
            detail={k: data[k] for k in ("error_type", "error_message", "worker_id", "hostname",
                                         "error_traceback") if k in data},
        )
    if isinstance(data, str):
        return WorkerError(f"worker failed: {data[:300]}", code="worker_error",
                           detail={"raw": raw})
    return error_from_dict(data)


def _type_name(error_type: str) -> str:
    """``"<class 'torch.OutOfMemoryError'>"`` → ``torch.OutOfMemoryError``."""
    return error_type.removeprefix("<class '").removesuffix("'>")
