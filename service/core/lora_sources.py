"""Where a LoRA imported by URL comes from: CivitAI model versions and Hugging Face files.

The one home of the URL rules, used by the API (to refuse a bad URL at once, with a 422) and by
the upscale worker (which downloads). Pure: no I/O, no settings; the sites' base URLs and the
plain-http allow-list are passed in.

Accepted (``B`` = the CivitAI base, ``https://civitai.com``; ``H`` = the Hugging Face base,
``https://huggingface.co``):

| URL | Source |
|---|---|
| ``B/models/<id>[/<slug>]?modelVersionId=<v>`` | CivitAI version ``v`` |
| ``B/models/<id>[/<slug>]`` (the model page) | model ``id``'s newest published version |
| ``B/api/download/models/<v>[?type=...&format=...]`` | CivitAI version ``v`` |
| ``B/api/v1/model-versions/<v>`` | CivitAI version ``v`` |
| ``H/<owner>/<repo>/resolve/<rev>/<path>.safetensors`` | that file |
| ``H/<owner>/<repo>/blob/<rev>/<path>.safetensors`` | the same file (``blob`` is the web page) |

A CivitAI version is read from ``B/api/v1/model-versions/<v>`` (file name, sha256, trained
words, base model, download URL); a model page from ``B/api/v1/models/<id>``, whose
``modelVersions`` list the versions newest first: the worker takes the first published one,
as CivitAI's site does when the page is opened, and reports which it took. Transport: ``https`` only, except hosts (``host:port``) named in the
explicit allow-list (the tests' loopback stand-ins). Tokens never travel in a URL: a
``token=`` query parameter the user pasted is dropped (:func:`redact`) and the worker sends
the configured token in an ``Authorization`` header instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from service.core.errors import ParamsError

CIVITAI_BASE = "https://civitai.com"
HUGGINGFACE_BASE = "https://huggingface.co"
MAX_URL_LENGTH = 2000
SECRET_PARAMS = frozenset({"token", "api_key", "apikey", "access_token", "auth", "key"})
_CIVITAI_HOSTS = ("civitai.com", "www.civitai.com")
_HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
_DIGITS = re.compile(r"^[0-9]{1,12}$")

SourceKind = Literal["civitai", "huggingface"]


@dataclass(frozen=True)
class LoraSource:
    """A resolved import source: where its bytes (and, for CivitAI, its facts) are read."""

    kind: SourceKind
    url: str  # the user's URL without secrets, for messages and records
    download_url: str | None  # None: a CivitAI model page (its version is chosen by the worker)
    metadata_url: str | None = None  # CivitAI model-version JSON, or the model's
    filename: str | None = None  # the file name the URL itself names (Hugging Face)
    version_id: int | None = None  # CivitAI model version
    model_id: int | None = None  # CivitAI model (a model page URL)


def unsupported(url: str, why: str) -> ParamsError:
    return ParamsError(
        f"cannot import {url[:200]!r}: {why}; give a CivitAI model or model-version URL "
        "(civitai.com/models/<id>, civitai.com/models/<id>?modelVersionId=<version> or "
        "civitai.com/api/download/models/<version>) or a Hugging Face file URL "
        "(huggingface.co/<owner>/<repo>/resolve/<revision>/<file>.safetensors)",
        code="import_url_unsupported",
    )


def redact(url: str) -> str:
    """``url`` without user info and without query parameters that carry secrets."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k.lower() not in SECRET_PARAMS]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports spelled out), for same-origin tests."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def check_transport(url: str, http_hosts: frozenset[str] | set[str] | list[str]) -> None:
    """Refuse (``import_url_insecure``) anything but ``https``, unless the URL is plain
    ``http`` to a ``host:port`` on the explicit allow-list."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        hostport = f"{parts.hostname.lower()}:{parts.port or 80}"
        if hostport in {h.lower() for h in http_hosts}:
            return
    raise ParamsError(
        f"refusing to download over {parts.scheme or 'no scheme'!s} from "
        f"{parts.hostname or url[:80]!r}: LoRAs are downloaded over https only (plain http "
        "only from hosts listed in AAT_LORA_IMPORT_HTTP_HOSTS)",
        code="import_url_insecure",
    )


def _under(url: str, base: str, default_hosts: tuple[str, ...], default_base: str,
           ) -> str | None:
    """The path of ``url`` below ``base`` (``/...``), or None when ``url`` is not under it.
    The default base also answers for its aliases (``www.``)."""
    parts, root = urlsplit(url), urlsplit(base.rstrip("/"))
    host = (parts.hostname or "").lower()
    if base.rstrip("/") == default_base and host in default_hosts and parts.scheme in (
            "https", "http"):
        return parts.path or "/"
    if (parts.scheme, host, parts.port) != (root.scheme, (root.hostname or "").lower(),
                                            root.port):
        return None
    prefix = root.path.rstrip("/")
    if prefix and not (parts.path == prefix or parts.path.startswith(prefix + "/")):
        return None
    return parts.path[len(prefix):] or "/"


def resolve_source(url: str, *, civitai_base: str = CIVITAI_BASE,
                   huggingface_base: str = HUGGINGFACE_BASE) -> LoraSource:
    """The source ``url`` names, or :class:`ParamsError` (``import_url_unsupported``)."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise unsupported(url, f"a URL of 1 to {MAX_URL_LENGTH} characters is needed")
    if urlsplit(url).scheme not in ("http", "https"):
        raise unsupported(url, "it is not an http(s) URL")
    clean = redact(url)
    path = _under(url, civitai_base, _CIVITAI_HOSTS, CIVITAI_BASE)
    if path is not None:
        model, version = _civitai_ids(clean, path)
        base = civitai_base.rstrip("/")
        if version is None:
            return LoraSource("civitai", clean, None, metadata_url=f"{base}/api/v1/models/{model}",
                              model_id=model)
        return LoraSource("civitai", clean, f"{base}/api/download/models/{version}",
                          metadata_url=f"{base}/api/v1/model-versions/{version}",
                          version_id=version, model_id=model)
    path = _under(url, huggingface_base, _HF_HOSTS, HUGGINGFACE_BASE)
    if path is not None:
        return _huggingface(clean, path, huggingface_base.rstrip("/"))
    raise unsupported(clean, "it is neither a CivitAI nor a Hugging Face URL")


def _civitai_ids(url: str, path: str) -> tuple[int | None, int | None]:
    """``(model, version)`` a CivitAI URL names; a model page without a version gives
    ``(model, None)``."""
    segments = [s for s in path.split("/") if s]
    query = dict(parse_qsl(urlsplit(url).query))
    if len(segments) in (2, 3) and segments[0] == "models" and _DIGITS.match(segments[1]):
        version = query.get("modelVersionId")
        if version is None:
            return int(segments[1]), None
        if not _DIGITS.match(version):
            raise unsupported(url, "its modelVersionId is not a number")
        return int(segments[1]), int(version)
    if (len(segments) == 4 and segments[:3] == ["api", "download", "models"]
            and _DIGITS.match(segments[3])):
        return None, int(segments[3])
    if (len(segments) == 4 and segments[:3] == ["api", "v1", "model-versions"]
            and _DIGITS.match(segments[3])):
        return None, int(segments[3])
    raise unsupported(url, "this CivitAI URL names no model or model version")


def _huggingface(url: str, path: str, base: str) -> LoraSource:
    segments = [s for s in path.split("/") if s]
    if len(segments) < 5 or segments[2] not in ("resolve", "blob"):
        raise unsupported(url, "this Hugging Face URL names no file (it needs "
                          "/resolve/<revision>/<file> or /blob/<revision>/<file>)")
    if any(s in (".", "..") for s in segments):
        raise unsupported(url, "the path has '.' or '..' parts")
    filename = segments[-1]
    if not filename.lower().endswith(".safetensors"):
        raise ParamsError(
            f"{filename!r} is not a .safetensors file; only safetensors LoRAs can be "
            "imported (pickled .ckpt/.bin/.pt files can run code when loaded)",
            code="model_invalid",
        )
    segments[2] = "resolve"
    return LoraSource("huggingface", url, f"{base}/{'/'.join(segments)}", filename=filename)
