"""Import a LoRA by URL onto the worker's volume: the ``import_model`` action.

Read top to bottom: resolve (CivitAI: the model version's JSON gives the safetensors file,
its sha256, trained words and base model; a model page's JSON lists its versions newest first
and the first published one is taken, as CivitAI's site does; a base model that is clearly not
SDXL is refused before anything is downloaded), download (streamed into a hidden temp file in
the LoRA folder, redirects followed by hand up to ``max_redirects``, every hop ``https`` or on
the request's plain-http allow-list, the size limit enforced from ``Content-Length`` and again
while reading, the first bytes checked to look like a safetensors header so an HTML page or a
pickle is dropped at once), check (the whole file parses as safetensors, its own metadata
names no other base model than SDXL, the CivitAI sha256 matches), keep (sidecar with trigger
words and the version taken, fsync, atomic rename). Whatever fails, the temp file is removed:
a refused import leaves nothing on the volume. A cancel (:mod:`workers.common.cancel`) is
seen between chunks and before the rename, and ends the import the same way.

Tokens: the CivitAI token goes only to the CivitAI origin, the Hugging Face token only to the
Hugging Face origin, in an ``Authorization: Bearer`` header (never in a URL, never logged); a
redirect to another origin (CivitAI's storage host, Hugging Face's CDN) is followed without
it. A token missing from the request is taken from the worker's own environment
(``AAT_CIVITAI_TOKEN``, ``AAT_HF_TOKEN`` / ``HF_TOKEN``), for deployments that keep secrets on
the endpoint. Progress (:class:`ImportProgress`) goes out at most every
:data:`PROGRESS_EVERY_S` through :func:`workers.common.progress.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx

from service.core.atomic import temp_path_for
from service.core.contracts import (
    CivitaiVersion,
    ImportModelRequest,
    ImportModelResponse,
    ImportProgress,
)
from service.core.errors import AatError, BackendUnavailable, ParamsError
from service.core.lora_sources import check_transport, origin
from workers.common import cancel, progress
from workers.upscale import lora_meta, models

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
SETTLE_S = 0.5  # quiet time between the last progress update and the result
MAX_METADATA_BYTES = 4 * 1024 * 1024
Report = Callable[[Any], None]


def import_model(req: ImportModelRequest, folder: Path | None = None,
                 report: Report = progress.report) -> ImportModelResponse:
    """Download, check and keep the LoRA ``req`` names; see the module docstring."""
    reporter = _Reporter(report)
    try:
        return _import(req, folder or models.lora_dir(), reporter)
    finally:
        reporter.settle()


def _import(req: ImportModelRequest, folder: Path, report: Report) -> ImportModelResponse:
    limit = min(req.max_bytes, models.max_bytes())
    if req.name is not None:
        models.safe_filename(req.name)  # a bad name is refused before any download
    report(ImportProgress(stage="resolving").model_dump())
    with _Fetcher(req) as fetch:
        found = _civitai_file(req, fetch) if req.source == "civitai" else _hf_file(req)
        name = models.safe_filename(req.name or models.suggest_name(found["filename"]))
        version: CivitaiVersion | None = found.get("version")
        folder.mkdir(parents=True, exist_ok=True)
        models.sweep_stale(folder)
        final = folder / name
        tmp = temp_path_for(final)
        try:
            size, digest = _download(fetch, found["url"], tmp, limit, name, version, report)
            report(ImportProgress(stage="checking", bytes_done=size, bytes_total=size,
                                  name=name, version=version).model_dump())
            _check(tmp, digest, found.get("sha256"), name)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            cancel.check(f"the import of {name}")  # the last moment a cancel can still stop it
            lora_meta.write_sidecar(final, size_bytes=size, sha256=digest,
                                    trigger_words=found.get("trigger_words"),
                                    source=found["source"])
            os.replace(tmp, final)
        except BaseException:
            if not final.exists():
                lora_meta.remove_sidecar(final)
            raise
        finally:
            tmp.unlink(missing_ok=True)
    log.info("imported LoRA %s (%d bytes) from %s", name, size, req.source)
    return ImportModelResponse(model=models.info(final), version=version)


class _Reporter:
    """Progress out, remembering when: RunPod's update travels on its own thread, and one
    that lands after the result leaves the job looking IN_PROGRESS (runpod-python#250), so the
    result waits until :data:`SETTLE_S` after the last update."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.last: float | None = None

    def __call__(self, value: Any) -> None:
        self.last = time.monotonic()
        self.report(value)

    def settle(self) -> None:
        if self.last is not None:
            time.sleep(max(0.0, SETTLE_S - (time.monotonic() - self.last)))


# ---- resolve ---------------------------------------------------------------------------------


def _civitai_file(req: ImportModelRequest, fetch: _Fetcher) -> dict[str, Any]:
    """The version's safetensors file: its download URL, name, sha256 and trained words, and
    which version it is (for a model page: the newest published one)."""
    if req.metadata_url is None:
        raise ParamsError("a CivitAI import needs the model version's metadata_url",
                          code="invalid_params")
    data = fetch.json(req.metadata_url)
    chosen: Literal["named", "newest"]
    if "modelVersions" in data:  # a model page's JSON
        version, model_id, chosen = _newest_version(data), data.get("id"), "newest"
    else:
        version, model_id, chosen = data, data.get("modelId"), "named"
    taken = CivitaiVersion(
        model_id=model_id if isinstance(model_id, int) else None,
        version_id=_int(version.get("id")),
        name=_text(version.get("name"), 300), base_model=_text(version.get("baseModel"), 100),
        chosen=chosen)
    lora_meta.check_base_model(taken.base_model, f"CivitAI model version {taken.version_id}"
                               + (f" ({taken.name})" if taken.name else ""))
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    safe = [f for f in files if _is_safetensors(f)]
    if not safe:
        offered = ", ".join(f"{f.get('name')} ({(f.get('metadata') or {}).get('format', '?')})"
                            for f in files[:5]) or "no files"
        raise ParamsError(
            f"CivitAI model version {taken.version_id} has no safetensors file "
            f"(it offers: {offered}); choose a version that offers a SafeTensor file",
            code="model_invalid",
        )
    chosen_file = next((f for f in safe if f.get("primary")), safe[0])
    url = chosen_file.get("downloadUrl") or version.get("downloadUrl") or req.download_url
    if not isinstance(url, str) or not url:
        raise ParamsError(f"CivitAI lists no download for model version {taken.version_id}; "
                          "check the model's page", code="import_not_found")
    sha = (chosen_file.get("hashes") or {}).get("SHA256")
    return {
        "url": url,
        "filename": str(chosen_file.get("name") or f"civitai-{taken.version_id}"),
        "sha256": sha.lower() if isinstance(sha, str) and len(sha) == 64 else None,
        "trigger_words": lora_meta.clean_words(version.get("trainedWords")),
        "version": taken,
        "source": {"kind": "civitai", "url": req.url, "model_id": taken.model_id,
                   "version_id": taken.version_id, "version_name": taken.name,
                   "base_model": taken.base_model, "chosen": chosen},
    }


def _newest_version(model: dict[str, Any]) -> dict[str, Any]:
    """The first published entry of a CivitAI model's ``modelVersions`` (newest first)."""
    versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict)
                and isinstance(v.get("id"), int) and v.get("status", "Published") == "Published"]
    if not versions:
        raise ParamsError(f"CivitAI model {model.get('id', '?')} has no published version to "
                          "import", code="import_not_found")
    return versions[0]


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BackendUnavailable("CivitAI answered with model-version JSON that has no version id; "
                             "try again later", code="import_source_unavailable", retryable=True)


def _text(value: Any, limit: int) -> str | None:
    return (value.strip()[:limit] or None) if isinstance(value, str) else None


def _is_safetensors(entry: dict[str, Any]) -> bool:
    fmt = (entry.get("metadata") or {}).get("format")
    name = str(entry.get("name") or "")
    kind = entry.get("type", "Model")
    return kind == "Model" and (fmt == "SafeTensor" or name.lower().endswith(".safetensors"))


def _hf_file(req: ImportModelRequest) -> dict[str, Any]:
    if req.download_url is None:
        raise ParamsError("a Hugging Face import needs the file's download_url",
                          code="invalid_params")
    path = urlsplit(req.download_url).path
    return {"url": req.download_url, "filename": path.rsplit("/", 1)[-1], "sha256": None,
            "trigger_words": [], "source": {"kind": "huggingface", "url": req.url}}


# ---- download --------------------------------------------------------------------------------


def _download(fetch: _Fetcher, url: str, tmp: Path, limit: int, name: str,
              version: CivitaiVersion | None, report: Report) -> tuple[int, str]:
    """Stream ``url`` into ``tmp``; returns ``(size, sha256)``. A cancel stops it between
    chunks."""
    digest = hashlib.sha256()
    done, last = 0, 0.0
    with fetch.stream(url) as resp, cancel.interrupting(lambda: _shut(resp)):
        total = _content_length(resp)
        if total is not None and total > limit:
            raise _too_large(name, total, limit)
        head = b""
        with tmp.open("wb") as out:
            for chunk in resp.iter_bytes():  # as it arrives: progress stays live
                cancel.check(f"the import of {name}")
                if len(head) < 9:
                    head += chunk[: 9 - len(head)]
                    if len(head) >= 9:
                        _check_head(head, name)
                done += len(chunk)
                if done > limit:
                    raise _too_large(name, done, limit)
                out.write(chunk)
                digest.update(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    last = now
                    report(ImportProgress(stage="downloading", bytes_done=done,
                                          bytes_total=total, name=name,
                                          version=version).model_dump())
    cancel.check(f"the import of {name}")  # its socket was shut: the download was cut
    if total is not None and done != total:
        raise BackendUnavailable(f"the download of {name} stopped at {done} of {total} bytes; "
                                 "import it again", code="import_source_unavailable")
    return done, digest.hexdigest()


def _shut(resp: httpx.Response) -> None:
    """Wake a read that waits on a quiet server (a cancel arrived): shut the socket down."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _content_length(resp: httpx.Response) -> int | None:
    try:
        value = int(resp.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _check_head(head: bytes, name: str) -> None:
    """The first 9 bytes: a plausible header length, then the JSON header's ``{``."""
    (size,) = struct.unpack("<Q", head[:8])
    if not 2 <= size <= 100 * 1024 * 1024 or head[8:9] != b"{":
        raise ParamsError(
            f"the file behind this URL is not a safetensors file (it starts like "
            f"{_kind_of(head)}); only safetensors LoRAs can be imported, so {name} was not kept",
            code="lora_invalid",
        )


def _kind_of(head: bytes) -> str:
    if head.lstrip()[:1] == b"<":
        return "an HTML page: a login or error page?"
    if head[:1] == b"\x80":
        return "a Python pickle (.ckpt/.pt)"
    if head[:2] == b"PK":
        return "a zip archive"
    return "something else"


def _check(tmp: Path, digest: str, expected: str | None, name: str) -> None:
    try:
        models.check_safetensors(tmp)
    except ParamsError as exc:
        raise ParamsError(f"{name} is not a valid safetensors file (truncated or corrupt); "
                          "it was not kept", code="lora_invalid") from exc
    lora_meta.check_base_model(lora_meta.file_base_model(lora_meta.read_metadata(tmp)),
                               f"{name} (so its own metadata says; it was not kept)")
    if expected is not None and digest != expected:
        raise ParamsError(f"{name} does not match the sha256 CivitAI lists for it; it was not "
                          "kept; import it again", code="lora_checksum")


def _too_large(name: str, size: int, limit: int) -> ParamsError:
    return ParamsError(f"{name} is {size} bytes or more; the limit is {limit} bytes "
                       "(AAT_MAX_MODEL_BYTES on the service, AAT_LORA_MAX_BYTES on the worker)",
                       code="lora_too_large")


class _Fetcher:
    """GET with hand-followed redirects: each hop checked, tokens only to their own origin."""

    def __init__(self, req: ImportModelRequest) -> None:
        self.req = req
        self.http = httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0),
                                 follow_redirects=False,
                                 headers={"user-agent": "ai-assets-toolbox-lora-import"})
        self.tokens: dict[str, tuple[str, str]] = {}  # origin -> (site, token)
        civitai = req.civitai_token or os.environ.get("AAT_CIVITAI_TOKEN")
        hf = req.hf_token or os.environ.get("AAT_HF_TOKEN") or os.environ.get("HF_TOKEN")
        if req.source == "civitai" and req.metadata_url:
            self.site = "CivitAI"
            self.site_origin = origin(req.metadata_url)
            if civitai:
                self.tokens[self.site_origin] = ("CivitAI", civitai)
        else:
            self.site = "Hugging Face"
            self.site_origin = origin(req.download_url or "")
            if hf:
                self.tokens[self.site_origin] = ("Hugging Face", hf)

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def json(self, url: str) -> dict[str, Any]:
        with self.stream(url) as resp:
            raw = b""
            for chunk in resp.iter_bytes():
                raw += chunk
                if len(raw) > MAX_METADATA_BYTES:
                    break
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BackendUnavailable(f"{self.site} answered {_host(url)} with something that "
                                     "is not model-version JSON; try again later",
                                     code="import_source_unavailable", retryable=True)
        return data

    @contextmanager
    def stream(self, url: str) -> Iterator[httpx.Response]:
        for _hop in range(self.req.max_redirects + 1):
            check_transport(url, self.req.http_hosts)
            headers = {}
            if (token := self.tokens.get(origin(url))) is not None:
                headers["authorization"] = f"Bearer {token[1]}"
            try:
                resp = self.http.send(self.http.build_request("GET", url, headers=headers),
                                      stream=True)
            except httpx.HTTPError as exc:
                raise BackendUnavailable(
                    f"could not reach {_host(url)} ({type(exc).__name__}); check the URL and "
                    "the worker's network, then import again",
                    code="import_source_unavailable", retryable=True) from exc
            if resp.is_redirect and "location" in resp.headers:
                resp.close()
                url = urljoin(url, resp.headers["location"])
                continue
            try:
                if resp.status_code >= 400:
                    raise self._refused(resp.status_code, url)
                yield resp
            except httpx.HTTPError as exc:
                cancel.check(f"the download from {_host(url)}")  # it broke off: it was cut
                raise BackendUnavailable(
                    f"the download from {_host(url)} broke off ({type(exc).__name__}); "
                    "import it again", code="import_source_unavailable", retryable=True,
                ) from exc
            finally:
                resp.close()
            return
        raise ParamsError(f"{self.req.url[:120]} redirected more than {self.req.max_redirects} "
                          "times; check the URL", code="import_redirects")

    def _refused(self, status: int, url: str) -> AatError:
        own = origin(url) == self.site_origin
        if status in (401, 403) and own:
            return ParamsError(self._auth_hint(status), code="import_unauthorized")
        if status == 404:
            return ParamsError(f"{_host(url)} has no such file (404): check the URL; the model "
                               "version or file may have been removed or made private",
                               code="import_not_found")
        if status == 429 or status >= 500:
            return BackendUnavailable(f"{_host(url)} answered {status}; try the import again "
                                      "in a few minutes", code="import_source_unavailable",
                                      retryable=True)
        return ParamsError(f"{_host(url)} refused the download ({status}); check the URL",
                           code="import_refused")

    def _auth_hint(self, status: int) -> str:
        has_token = self.site_origin in self.tokens
        if self.site == "CivitAI":
            if has_token:
                return (f"CivitAI refused the token ({status}); check AAT_CIVITAI_TOKEN (a valid, "
                        "unrevoked API key from your CivitAI account settings; early-access "
                        "models also need access on that account)")
            return (f"CivitAI asks for a login to download this file ({status}); create an API "
                    "key in your CivitAI account settings and set AAT_CIVITAI_TOKEN on the "
                    "service, then import again")
        if has_token:
            return (f"Hugging Face refused the token ({status}); check AAT_HF_TOKEN and accept "
                    "the model's licence on its page if it is gated")
        return (f"Hugging Face asks for a login to download this file ({status}: a private or "
                "gated repo); set AAT_HF_TOKEN to a read token (and accept the licence on the "
                "model's page), then import again")


def _host(url: str) -> str:
    return urlsplit(url).netloc or url[:60]
