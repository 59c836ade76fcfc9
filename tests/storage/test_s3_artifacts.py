"""The S3-compatible artifact store against a real S3-protocol server process (moto_server):
the same keys and layout as the local store, shared across hosts, streamed, probed by doctor."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.errors import ConfigError
from service.settings import load_settings
from service.storage.artifacts import LocalArtifactStore, relative_name, sha256_bytes
from service.storage.s3_artifacts import S3ArtifactStore, parse_s3_url
from service.storage.stores import open_artifacts

pytestmark = pytest.mark.slow  # a moto_server process


def store(s3_server: Any, bucket: str, cache: Path, prefix: str = "studio/aat") -> S3ArtifactStore:
    return S3ArtifactStore(f"s3://{bucket}/{prefix}", cache, endpoint_url=s3_server.endpoint_url,
                           access_key_id="test", secret_access_key="test")


def test_same_keys_and_layout_as_the_local_store_and_another_host_reads_them(
        s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    host_a, host_b = store(s3_server, bucket, tmp_path / "a"), store(s3_server, bucket, tmp_path / "b")
    local = LocalArtifactStore(tmp_path / "local")
    png = os.urandom(3000)
    tile = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    key = host_a.put_bytes("inputs", png, ".png")
    assert key == local.put_bytes("inputs", png, ".png") == sha256_bytes(png)
    host_a.put_array("t" * 64, tile)
    host_a.put_text("c" * 64, "a mossy stone wall")
    names = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert names == {f"studio/aat/{relative_name('inputs', key, '.png')}",
                     f"studio/aat/{relative_name('refined', 't' * 64, '.npy')}",
                     f"studio/aat/{relative_name('captions', 'c' * 64, '.txt')}"}
    # host B starts with an empty data directory and finds everything host A stored
    assert not (tmp_path / "b" / "inputs").exists()
    assert host_b.get_bytes("inputs", key, ".png") == png
    assert np.array_equal(host_b.get_array("t" * 64), tile)
    assert host_b.get_text("c" * 64) == "a mossy stone wall"
    found = host_b.find("inputs", key)
    assert found is not None and found.read_bytes() == png
    assert host_b.get_array("u" * 64) is None and host_b.get_text("d" * 64) is None
    assert host_b.find("inputs", "0" * 64) is None
    with pytest.raises(FileNotFoundError):
        host_b.get_bytes("outputs", "0" * 64, ".png")


def test_a_big_png_streams_and_is_never_held_twice(s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    size = 48 * 1024 * 1024  # a 16K RGBA PNG of noise is in this range; multipart above 16 MB
    data = os.urandom(size)
    up = store(s3_server, bucket, tmp_path / "up")
    tracemalloc.start()
    key = up.put_bytes("outputs", data, ".png")
    _, peak_put = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    down = store(s3_server, bucket, tmp_path / "down")
    tracemalloc.start()
    path = down.local_file("outputs", key, ".png")  # what the API serves the result from
    _, peak_get = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert path is not None and path.stat().st_size == size and sha256_bytes(path.read_bytes()) == key
    assert peak_put < size * 0.6, peak_put  # bounded parts, not a second copy of the file
    assert peak_get < size * 0.6, peak_get
    head = s3_server.client().head_object(Bucket=bucket, Key=f"studio/aat/{relative_name('outputs', key, '.png')}")
    assert head["ContentLength"] == size and "-" in head["ETag"]  # a multipart upload


def test_a_second_put_of_the_same_bytes_uploads_nothing(s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    data = os.urandom(1000)
    first = store(s3_server, bucket, tmp_path / "a")
    key = first.put_bytes("inputs", data, ".png")
    obj = f"studio/aat/{relative_name('inputs', key, '.png')}"
    before = s3_server.client().head_object(Bucket=bucket, Key=obj)["LastModified"]
    again = store(s3_server, bucket, tmp_path / "b")
    assert again.put_bytes("inputs", data, ".png") == key
    assert s3_server.client().head_object(Bucket=bucket, Key=obj)["LastModified"] == before


def test_gc_lists_and_deletes_in_the_bucket(s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    s = store(s3_server, bucket, tmp_path / "a")
    keep = s.put_bytes("inputs", b"keep", ".png")
    drop = s.put_bytes("outputs", b"drop", ".png")
    assert {e.key for e in s.entries()} == {keep, drop}
    assert s.delete_unreferenced({keep}, dry_run=True) == (1, 4)
    assert {e.key for e in s.entries()} == {keep, drop}
    assert s.delete_unreferenced({keep}) == (1, 4)
    assert {e.key for e in s.entries()} == {keep}


def test_settings_pick_the_store_and_doctor_probes_the_bucket(s3_server: Any, tmp_path: Path,
                                                             monkeypatch) -> None:
    from service.cli.doctor import check_artifacts

    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")  # moto accepts any
    settings = load_settings(data_dir=tmp_path, artifacts_url=f"s3://{bucket}/p",
                             s3_endpoint_url=s3_server.endpoint_url)
    assert settings.s3_secret_access_key is not None
    assert "s3cr3t-value" not in repr(settings)
    assert isinstance(open_artifacts(settings), S3ArtifactStore)
    ok = check_artifacts(settings)
    assert ok.ok and "writable" in ok.detail
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # cleaned
    missing = check_artifacts(load_settings(data_dir=tmp_path, artifacts_url="s3://no-such/p",
                                            s3_endpoint_url=s3_server.endpoint_url))
    assert not missing.ok and "NoSuchBucket" in missing.detail
    local = check_artifacts(load_settings(data_dir=tmp_path / "d", artifacts_url=None))
    assert local.ok and "writable" in local.detail
    assert isinstance(open_artifacts(load_settings(data_dir=tmp_path / "d")), LocalArtifactStore)


def test_bad_artifacts_urls_are_refused() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        parse_s3_url("https://bucket/prefix")
    with pytest.raises(ConfigError, match="artifacts_url"):
        load_settings(artifacts_url="/mnt/nfs/artifacts")
