"""Intake of ``POST /v1/jobs``: the three body forms, size caps, parameter and image checks.

Forms (docs/api/contract.md): a raw ``image/*`` body with parameters in the query string
(Godot has no multipart helper), ``multipart/form-data`` (parts ``file``, ``params``,
``target``), or JSON naming a path inside a configured root. The body is streamed and
abandoned as soon as it passes ``max_upload_bytes`` (413), never buffered unbounded. The image
header is probed (size, decompression bomb) and paths are confined before anything is stored.
The result is a :class:`Submission` for the job service.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.api.problems import ApiError
from service.core.errors import ParamsError, upload_too_large
from service.core.imaging import probe_image
from service.core.jobs import TargetSpec
from service.core.naming import confine_file
from service.core.params import UpscaleParams
from service.settings import Settings

MAX_JSON_BYTES = 1024 * 1024  # any JSON body (routes parsed by FastAPI take it as max_body_size)
MAX_FIELD_BYTES = 64 * 1024
_FILENAME_RE = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")
_TARGET_QUERY = {"target_repo": "repo", "target_path": "path", "naming": "naming",
                 "mirror_dir": "mirror_dir", "overwrite": "overwrite"}


class JobFromPath(BaseModel):
    """JSON body: submit a file the server can read, inside an intake root or a repo."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096)
    params: UpscaleParams = Field(default_factory=UpscaleParams)
    target: TargetSpec | None = None


@dataclass
class Submission:
    """A validated submission: either ``data`` (uploaded bytes) or ``path`` (server file)."""

    filename: str
    params: UpscaleParams
    target: TargetSpec | None
    data: bytes | None = None
    path: Path | None = None


# ---- size-capped body -----------------------------------------------------------------------


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", upload_too_large(limit))


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once when ``Content-Length`` already says the body is too big."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def capped_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body chunk by chunk; raises 413 once more than ``limit`` bytes arrived."""
    check_declared_length(request, limit)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        yield chunk


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond)."""
    parts = [chunk async for chunk in capped_stream(request, limit)]
    return b"".join(parts)


# ---- parameters -----------------------------------------------------------------------------


def params_error(exc: ValidationError, where: str) -> ParamsError:
    """``invalid parameter scale: ...`` naming the field; a rule across fields (no field)
    reads ``invalid parameters: ...``."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    whole = {"parameter": "parameters", "field": "request body"}.get(where, where)
    what = f"{where} {loc}" if loc else whole
    msg = str(first.get("msg", "bad value")).removeprefix("Value error, ")
    return ParamsError(f"invalid {what}: {msg}; fix it and resubmit")


def parse_loras(text: str) -> list[dict[str, Any]]:
    """``name:weight,name2:weight`` (weight optional, default 1) → LoRA specs."""
    out: list[dict[str, Any]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, weight = item.rpartition(":")
        if not sep:
            name, weight = item, "1"
        out.append({"name": name, "weight": weight})
    return out


def params_from_mapping(raw: dict[str, Any], where: str = "parameter") -> UpscaleParams:
    """Validate a dict of parameters (lax: query strings are converted to numbers/bools)."""
    try:
        return UpscaleParams.model_validate(raw)
    except ValidationError as exc:
        raise params_error(exc, where) from exc


def target_from_mapping(raw: dict[str, Any] | None) -> TargetSpec | None:
    if not raw:
        return None
    try:
        return TargetSpec.model_validate(raw)
    except ValidationError as exc:
        raise params_error(exc, "target") from exc


def split_query(request: Request) -> tuple[str, dict[str, str], TargetSpec | None]:
    """The query string as ``(filename, the job's parameters, target)``."""
    query = dict(request.query_params)
    filename = _clean_filename(query.pop("filename", "upload.png"))
    target = {_TARGET_QUERY[k]: query.pop(k) for k in list(query) if k in _TARGET_QUERY}
    return filename, query, target_from_mapping(target)


def _from_query(request: Request) -> tuple[str, UpscaleParams, TargetSpec | None]:
    filename, query, target = split_query(request)
    if "loras" in query:
        query["loras"] = parse_loras(query["loras"])  # type: ignore[assignment]
    return filename, params_from_mapping(query), target


def _clean_filename(name: str | None) -> str:
    name = (name or "upload.png").replace("\\", "/").rsplit("/", 1)[-1]
    if not _FILENAME_RE.match(name) or name in (".", ".."):
        raise ParamsError("invalid filename; give a plain file name such as rock.png")
    return name


def _json_part(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"the {what} part is not valid JSON ({exc.msg}); send a JSON "
                          "object") from exc
    if not isinstance(value, dict):
        raise ParamsError(f"the {what} part must be a JSON object")
    return value


# ---- the three forms ------------------------------------------------------------------------


async def _raw(request: Request, settings: Settings) -> Submission:
    filename, params, target = _from_query(request)
    data = await read_capped(request, settings.max_upload_bytes)
    return Submission(_clean_filename(filename), params, target, data=data)


async def _multipart(request: Request, settings: Settings) -> Submission:
    parser = MultiPartParser(request.headers, capped_stream(request, settings.max_upload_bytes),
                             max_files=1, max_fields=4, max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ParamsError(f"malformed multipart body: {exc.message}") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ParamsError("the multipart body needs a 'file' part with the image")
        data = await upload.read()
        raw_params = _json_part(_text(form.get("params")), "params") or {}
        params = params_from_mapping(raw_params)
        target = target_from_mapping(_json_part(_text(form.get("target")), "target"))
        return Submission(_clean_filename(upload.filename), params, target, data=data)
    finally:
        await form.close()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def _json(request: Request, settings: Settings) -> Submission:
    body = await read_capped(request, MAX_JSON_BYTES)
    try:
        req = JobFromPath.model_validate_json(body)
    except ValidationError as exc:
        raise params_error(exc, "field") from exc  # "invalid field path: ..."
    path = confine_file(req.path, settings.intake_folders())
    if path.stat().st_size > settings.max_upload_bytes:
        raise _too_large(settings.max_upload_bytes)
    return Submission(path.name, req.params, req.target, path=path)


async def parse_submission(request: Request, settings: Settings) -> Submission:
    """Read and validate one submission; raises :class:`AatError` subclasses on bad input."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        sub = await _raw(request, settings)
    elif ctype == "multipart/form-data":
        sub = await _multipart(request, settings)
    elif ctype == "application/json":
        return await _json(request, settings)
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"unsupported Content-Type {ctype or '(none)'}; send image/*, "
                       "multipart/form-data or application/json")
    assert sub.data is not None
    probe_image(sub.data, settings.image_limits())  # bombs and oversize refused before storing
    return sub
