"""LoRA volume storage (``workers.upscale.models``): chunk order, retries and header checks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from service.core.contracts import UploadModelRequest
from service.core.errors import ParamsError
from workers.upscale import models

pytestmark = pytest.mark.slow  # torch: tiny random SDXL/VLM pipelines on the CPU


def _safetensors(payload: bytes = bytes(range(256)) * 4) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)],
                               "data_offsets": [0, len(payload)]}}).encode()
    return struct.pack("<Q", len(header)) + header + payload


def _chunk(data: bytes, index: int, total: int, name: str = "style.safetensors"
           ) -> UploadModelRequest:
    return UploadModelRequest(filename=name, file_b64=base64.b64encode(data).decode(),
                              chunk_index=index, total_chunks=total)


def _parts(data: bytes, n: int) -> list[bytes]:
    size = len(data) // n + 1
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_a_retried_chunk_does_not_corrupt_the_stored_lora(tmp_path: Path) -> None:
    data = _safetensors()
    parts = _parts(data, 3)
    models.upload(_chunk(parts[0], 0, 3), tmp_path)
    models.upload(_chunk(parts[1], 1, 3), tmp_path)
    models.upload(_chunk(parts[1], 1, 3), tmp_path)  # the reply was lost; the client resends
    done = models.upload(_chunk(parts[2], 2, 3), tmp_path)
    assert done.status == "complete"
    assert (tmp_path / "style.safetensors").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "style.safetensors", "style.safetensors.meta.json"]
    # no sha256 came with the chunks (the local backend sends none): the worker records its own
    assert done.model is not None and done.model.sha256 == hashlib.sha256(data).hexdigest()
    assert models.list_models(tmp_path).models == [done.model]


def test_an_upload_made_for_another_base_model_is_refused(tmp_path: Path) -> None:
    meta = {"ss_base_model_version": "sd_v1"}
    header = json.dumps({"__metadata__": meta, "w": {"dtype": "U8", "shape": [4],
                                                     "data_offsets": [0, 4]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"abcd"
    with pytest.raises(ParamsError, match="made for sd_v1, not SDXL") as info:
        models.upload(_chunk(data, 0, 1), tmp_path)
    assert info.value.code == "lora_incompatible"
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_that_skips_ahead_is_refused_and_nothing_lands(tmp_path: Path) -> None:
    parts = _parts(_safetensors(), 3)
    models.upload(_chunk(parts[0], 0, 3), tmp_path)
    with pytest.raises(ParamsError, match="chunk 1"):
        models.upload(_chunk(parts[2], 2, 3), tmp_path)  # chunk 1 went missing
    assert not (tmp_path / "style.safetensors").exists()
    with pytest.raises(ParamsError, match="restart"):
        models.upload(_chunk(parts[1], 1, 4), tmp_path)  # total_chunks changed mid-upload
    assert not (tmp_path / "style.safetensors").exists()


@pytest.mark.parametrize("offsets", [["0", "4"], [0, 2.5], None, [0, True], {"a": 1}])
def test_a_header_with_non_integer_offsets_is_refused_as_invalid(
        tmp_path: Path, offsets: object) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [4], "data_offsets": offsets}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * 4
    with pytest.raises(ParamsError) as info:
        models.upload(_chunk(data, 0, 1), tmp_path)
    assert info.value.code == "lora_invalid"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("label", "refused"), [
    ("SDXL 1.0", False), ("SDXL Turbo", False), ("Pony", False), ("Illustrious", False),
    ("NoobAI", False), ("sdxl_base_v1-0", False), ("stable-diffusion-xl-v1-base/lora", False),
    ("Other", False), ("Playground v2", False), (None, False), ("", False),
    ("SD 1.5", True), ("SD 1.5 LCM", True), ("SD 2.1 768", True), ("SD 3.5 Large", True),
    ("sd_v1", True), ("sd_v2_768_v", True), ("stable-diffusion-v1/lora", True),
    ("Flux.1 D", True), ("flux-1-dev/lora", True), ("Hunyuan Video", True), ("Wan Video", True),
])
def test_only_loras_made_for_sdxl_or_an_unknown_base_pass(label: str | None,
                                                           refused: bool) -> None:
    from workers.upscale.lora_meta import check_base_model

    if not refused:
        check_base_model(label, "x")
        return
    with pytest.raises(ParamsError, match=f"made for {re.escape(str(label))}, not SDXL"):
        check_base_model(label, "x")
