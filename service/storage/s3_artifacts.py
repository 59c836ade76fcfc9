"""The artifact store in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, ...).

``AAT_ARTIFACTS_URL=s3://bucket/prefix`` puts every artifact at ``prefix/<kind>/<key[:2]>/
<key><ext>`` (the local layout, see :mod:`service.storage.artifacts`), so several hosts share
inputs, outputs and the tile cache: a job resumed on another host finds the tiles already paid
for. Each host keeps a read-through cache of what it wrote or read under its own data directory
(a key never changes its bytes, so the cache never goes stale).

Bytes stream: uploads go from the cached file on disk (boto3's managed transfer, multipart above
``MULTIPART_BYTES``) and downloads stream into a temp file that is renamed into the cache, so a
16K PNG is never held twice in memory. Credentials come from the settings (``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` or ``AAT_S3_*``), else boto3's usual chain (instance roles).
Library errors are translated here: a missing object is ``None`` / ``FileNotFoundError``,
an unreachable or refusing bucket is :class:`~service.core.errors.ConfigError` from
:meth:`S3ArtifactStore.probe`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from service.core.errors import ConfigError
from service.storage.artifacts import (
    Entry,
    LocalArtifactStore,
    load_npy,
    npy_bytes,
    relative_name,
    sha256_bytes,
)

log = logging.getLogger(__name__)

MULTIPART_BYTES = 16 * 1024 * 1024  # parts of this size above it (bounded memory per upload)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, ``some/prefix``); ConfigError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"AAT_ARTIFACTS_URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class S3ArtifactStore:
    """Content-addressed artifacts in a bucket, cached under ``cache_root`` on this host."""

    def __init__(self, url: str, cache_root: Path, *, endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, client: Any = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        self.cache = LocalArtifactStore(cache_root)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                config=Config(retries={"max_attempts": 5, "mode": "standard"},
                              connect_timeout=5, read_timeout=60, s3={"addressing_style": "path"}),
            )
        self.client = client
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES,
                                        multipart_chunksize=MULTIPART_BYTES, max_concurrency=4)

    def object_key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    # ---- the two transfers ---------------------------------------------------------------------
    def _exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(name))
            return True
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise

    def _upload(self, name: str, local: Path) -> None:
        if not self._exists(name):  # content-addressed: present means the same bytes
            self.client.upload_file(str(local), self.bucket, self.object_key(name),
                                    Config=self._transfer)

    def _download(self, name: str, dest: Path) -> bool:
        """Stream the object into the cache at ``dest``; False if the bucket lacks it."""
        from botocore.exceptions import ClientError

        tmp = self.cache.temp_for(dest)
        try:
            self.client.download_file(self.bucket, self.object_key(name), str(tmp),
                                      Config=self._transfer)
            os.replace(tmp, dest)
            return True
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _cached(self, kind: str, key: str, ext: str) -> Path | None:
        path = self.cache.path(kind, key, ext)
        if path.is_file() or self._download(relative_name(kind, key, ext), path):
            return path
        return None

    def _put_file(self, kind: str, key: str, ext: str, data: bytes) -> None:
        path = self.cache.path(kind, key, ext)
        self.cache.write_once(path, data)
        self._upload(relative_name(kind, key, ext), path)

    # ---- the ArtifactStore port ----------------------------------------------------------------
    def put_bytes(self, kind: str, data: bytes, ext: str) -> str:
        key = sha256_bytes(data)
        self._put_file(kind, key, ext, data)
        return key

    def presigned_url(self, kind: str, key: str, ext: str, *, expires_s: int = 3600) -> str:
        """A time-limited GET URL of a stored artifact (what a remote service fetches)."""
        name = relative_name(kind, key, ext)
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(name)},
            ExpiresIn=expires_s))

    def get_bytes(self, kind: str, key: str, ext: str) -> bytes:
        path = self._cached(kind, key, ext)
        if path is None:
            raise FileNotFoundError(f"{self.url}/{relative_name(kind, key, ext)}")
        return path.read_bytes()

    def find(self, kind: str, key: str) -> Path | None:
        local = self.cache.find(kind, key)
        if local is not None:
            return local
        listed = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self.object_key(relative_name(kind, key)), MaxKeys=1)
        for obj in listed.get("Contents", []):
            ext = "." + obj["Key"].rsplit("/", 1)[-1].split(".", 1)[1]
            return self._cached(kind, key, ext)
        return None

    def local_file(self, kind: str, key: str, ext: str) -> Path | None:
        return self._cached(kind, key, ext)

    def put_array(self, key: str, array: np.ndarray, kind: str = "refined") -> None:
        self._put_file(kind, key, ".npy", npy_bytes(array))

    def get_array(self, key: str, kind: str = "refined") -> np.ndarray | None:
        path = self._cached(kind, key, ".npy")
        return None if path is None else load_npy(path)

    def put_text(self, key: str, text: str) -> None:
        self._put_file("captions", key, ".txt", text.encode("utf-8"))

    def get_text(self, key: str) -> str | None:
        path = self._cached("captions", key, ".txt")
        return None if path is None else path.read_text("utf-8")

    def entries(self) -> Iterator[Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=base)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base):]
                if name.split("/", 1)[0] not in ("inputs", "outputs", "refined", "captions",
                                                 "pre"):
                    continue
                key = name.rsplit("/", 1)[-1].split(".", 1)[0]
                yield Entry(name, key, obj["LastModified"].timestamp(), int(obj["Size"]))

    def delete_unreferenced(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        doomed = [e for e in self.entries() if e.key not in keep]
        if not dry_run:
            for start in range(0, len(doomed), 1000):  # DeleteObjects takes up to 1000 keys
                batch = doomed[start:start + 1000]
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self.object_key(e.name)} for e in batch], "Quiet": True})
            self.cache.delete_unreferenced(keep)
        return len(doomed), sum(e.size for e in doomed)

    def probe(self) -> str:
        """Write, read back and delete a small object; ConfigError naming what failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.object_key(f".probe/{secrets.token_hex(8)}")
        token = secrets.token_bytes(16)
        where = f"{self.url} at {self.endpoint_url or 'AWS'}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=token)
            back = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ConfigError(f"{where}: {code} ({_status(exc)}); check the bucket name, "
                              "AAT_S3_ENDPOINT_URL and the credentials") from exc
        except BotoCoreError as exc:
            raise ConfigError(f"{where} not reachable: {exc}; check AAT_S3_ENDPOINT_URL"
                              ) from exc
        if back != token:
            raise ConfigError(f"{where} returned different bytes than were written")
        return f"{where}: writable"


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
