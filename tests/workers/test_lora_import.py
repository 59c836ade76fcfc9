"""LoRA import by URL, through the RunPod emulator serving the real upscale worker handler,
against a loopback stand-in for CivitAI / Hugging Face and their storage host (real HTTP)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lora_standin import TOKEN, StandIn, safetensors_bytes

from service.core.contracts import ImportModelRequest
from service.core.lora_sources import resolve_source


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn(slow_bytes=3 * 1024 * 1024, slow_seconds=2.0).start()
    yield server
    server.stop()


@pytest.fixture
def volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "volume" / "loras"
    monkeypatch.setenv("AAT_LORA_DIR", str(folder))
    monkeypatch.delenv("AAT_CIVITAI_TOKEN", raising=False)
    return folder


@pytest.fixture
def worker(runpod_emulator: Any, volume: Path) -> Any:
    """The emulator serving the upscale worker's own handler."""
    from workers.upscale.handler import handler

    emu = runpod_emulator(workers=2, handler=handler, endpoints=("upscale",))
    return emu


def import_input(standin: StandIn, url: str, **extra: Any) -> dict[str, Any]:
    src = resolve_source(url, civitai_base=standin.site + "/civitai",
                         huggingface_base=standin.site + "/hf")
    extra.setdefault("http_hosts", standin.http_hosts)
    extra.setdefault("max_bytes", 64 * 1024 * 1024)
    req = ImportModelRequest(source=src.kind, url=src.url, download_url=src.download_url,
                             metadata_url=src.metadata_url, **extra)
    return req.model_dump(mode="json", exclude_none=True)


def run(emu: Any, payload: dict[str, Any], watch: list[Any] | None = None) -> dict[str, Any]:
    """Submit with /run and poll /status until terminal; IN_PROGRESS outputs go to ``watch``."""
    headers = {"authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url + "/upscale", headers=headers, timeout=10) as http:
        job_id = http.post("/run", json={"input": payload}).json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = http.get(f"/status/{job_id}").json()
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                return dict(body)
            if watch is not None and body["status"] == "IN_PROGRESS" and "output" in body:
                watch.append(body["output"])
            time.sleep(0.05)
    raise AssertionError(f"import job {job_id} did not finish")


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body["status"] == "FAILED", body
    return dict(json.loads(body["error"]))


def list_models(emu: Any) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {emu.api_key}"}
    resp = httpx.post(emu.url + "/upscale/runsync", headers=headers, timeout=30,
                      json={"input": {"action": "list_models"}})
    return list(resp.json()["output"]["models"])


def test_a_civitai_version_is_downloaded_through_the_redirect_with_its_trained_words(
        standin: StandIn, worker: Any, volume: Path) -> None:
    url = f"{standin.site}/civitai/models/10/moss-style?modelVersionId=101"
    body = run(worker, import_input(standin, url))
    assert body["status"] == "COMPLETED", body
    model = body["output"]["model"]
    assert model["name"] == "moss_style.safetensors"
    assert model["sha256"] == standin.sha256("moss_style.safetensors")
    assert model["trigger_words"] == ["mossy stone", "mst_style"]
    assert (volume / "moss_style.safetensors").read_bytes() == standin.files[
        "moss_style.safetensors"]
    # the storage host was reached through CivitAI's redirect, with its signed URL
    assert [h.path for h in standin.hits if h.server == "storage"] == [
        "/files/moss_style.safetensors?sig=signed-101"]
    listed = list_models(worker)
    assert [(m["name"], m["trigger_words"], m["sha256"]) for m in listed] == [
        ("moss_style.safetensors", ["mossy stone", "mst_style"],
         standin.sha256("moss_style.safetensors"))]
    assert sorted(p.name for p in volume.iterdir()) == [
        "moss_style.safetensors", "moss_style.safetensors.meta.json"]


def leftovers(volume: Path) -> tuple[list[Path], list[Path]]:
    """Stale and fresh leftovers of imports (temp files) and chunked uploads (``.partial`` and
    its ``.partial.json`` note) that never finished."""
    volume.mkdir(parents=True, exist_ok=True)
    stale = [volume / ".moss.safetensors.0badc0de.aat-tmp",
             volume / ".half.safetensors.partial", volume / ".half.safetensors.partial.json"]
    fresh = [volume / ".other.safetensors.12345678.aat-tmp",  # running right now
             volume / ".busy.safetensors.partial", volume / ".busy.safetensors.partial.json"]
    for path in stale + fresh:
        path.write_bytes(b"partial")
    old = time.time() - 2 * 24 * 3600
    for path in stale:
        os.utime(path, (old, old))
    return stale, fresh


def test_leftovers_of_killed_imports_and_abandoned_uploads_are_swept_by_the_next_import(
        standin: StandIn, worker: Any, volume: Path) -> None:
    stale, fresh = leftovers(volume)
    body = run(worker, import_input(standin, f"{standin.site}/civitai/api/download/models/101"))
    assert body["status"] == "COMPLETED", body
    assert [p.name for p in stale if p.exists()] == []
    assert all(p.exists() for p in fresh)


def test_leftovers_are_swept_when_an_upload_starts(worker: Any, volume: Path) -> None:
    import base64

    stale, fresh = leftovers(volume)
    headers = {"authorization": f"Bearer {worker.api_key}"}
    data = safetensors_bytes(256)
    resp = httpx.post(worker.url + "/upscale/runsync", headers=headers, timeout=30, json={
        "input": {"action": "upload_model", "filename": "new.safetensors",
                  "file_b64": base64.b64encode(data).decode()}})
    assert resp.json()["output"]["status"] == "complete", resp.text
    assert [p.name for p in stale if p.exists()] == []
    assert all(p.exists() for p in fresh)


def test_a_hugging_face_blob_link_is_fetched_from_resolve_under_the_name_given(
        standin: StandIn, worker: Any, volume: Path) -> None:
    url = f"{standin.site}/hf/pixel-lab/pixel-art-xl/blob/main/pixel_art.safetensors"
    body = run(worker, import_input(standin, url, name="pixel art.safetensors"))
    assert body["status"] == "COMPLETED", body
    assert body["output"]["model"]["name"] == "pixel art.safetensors"
    # no sidecar words: the file's own modelspec.trigger_phrase
    assert body["output"]["model"]["trigger_words"] == ["pxlart", "16-bit sprite"]
    assert [h.path for h in standin.hits if h.server == "site"] == [
        "/hf/pixel-lab/pixel-art-xl/resolve/main/pixel_art.safetensors"]


def test_the_civitai_token_goes_to_civitai_only_and_a_401_says_which_setting_to_set(
        standin: StandIn, worker: Any, volume: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{standin.site}/civitai/api/download/models/103"
    err = error_of(run(worker, import_input(standin, url)))
    assert err["code"] == "import_unauthorized"
    assert "set AAT_CIVITAI_TOKEN" in err["message"]
    assert list(volume.iterdir()) == [], "a refused import left something on the volume"

    standin.hits.clear()
    body = run(worker, import_input(standin, url, civitai_token=TOKEN))
    assert body["status"] == "COMPLETED", body
    assert body["output"]["model"]["trigger_words"] == ["private look"]
    site = [h for h in standin.hits if h.server == "site"]
    storage = [h for h in standin.hits if h.server == "storage"]
    assert site and all(h.auth == f"Bearer {TOKEN}" for h in site)
    assert storage and all(h.auth is None for h in storage), "token leaked to storage"
    assert TOKEN not in caplog.text
    assert TOKEN not in json.dumps(body)

    wrong = error_of(run(worker, import_input(standin, url, civitai_token="revoked")))
    assert wrong["code"] == "import_unauthorized"
    assert "check AAT_CIVITAI_TOKEN" in wrong["message"]


@pytest.mark.parametrize(("url", "extra", "code", "words"), [
    ("/civitai/models/10?modelVersionId=102", {}, "model_invalid", "no safetensors file"),
    ("/civitai/api/download/models/105", {}, "lora_invalid", "HTML page"),
    ("/civitai/api/download/models/106", {}, "import_redirects", "redirected more than 5"),
    ("/civitai/api/download/models/107", {}, "lora_checksum", "sha256"),
    ("/civitai/api/download/models/999", {}, "import_not_found", "404"),
    ("/civitai/api/download/models/101", {"max_bytes": 1000}, "lora_too_large", "limit"),
    ("/civitai/api/download/models/101", {"http_hosts": []}, "import_url_insecure", "https"),
    ("/hf/a/b/resolve/main/missing.safetensors", {}, "import_not_found", "404"),
    ("/civitai/api/download/models/101", {"name": "../evil"}, "path_forbidden", "path"),
    ("/civitai/models/20/old-style", {}, "lora_incompatible", "made for SD 1.5, not SDXL"),
    ("/civitai/api/download/models/202", {}, "lora_incompatible", "made for Flux.1 D"),
    ("/hf/a/b/resolve/main/flux_lora.safetensors", {}, "lora_incompatible",
     "made for flux-1-dev/lora"),
    ("/civitai/models/30", {}, "import_not_found", "no published version"),
    ("/civitai/models/99", {}, "import_not_found", "404"),
])
def test_a_refused_import_says_why_and_leaves_nothing_on_the_volume(
        standin: StandIn, worker: Any, volume: Path, url: str, extra: dict[str, Any],
        code: str, words: str) -> None:
    volume.mkdir(parents=True)
    (volume / "kept.safetensors").write_bytes(standin.files["moss_style.safetensors"])
    err = error_of(run(worker, import_input(standin, standin.site + url, **extra)))
    assert (err["code"], err["retryable"]) == (code, False), err
    assert words in err["message"]
    assert [p.name for p in volume.iterdir()] == ["kept.safetensors"]


def test_a_slow_download_reports_growing_progress_until_it_completes(
        standin: StandIn, worker: Any, volume: Path) -> None:
    seen: list[Any] = []
    body = run(worker, import_input(standin, f"{standin.site}/civitai/api/download/models/104"),
               watch=seen)
    assert body["status"] == "COMPLETED", body
    size = len(standin.files["big_slow.safetensors"])
    downloading = [p for p in seen if p["stage"] == "downloading"]
    done = sorted({p["bytes_done"] for p in downloading})
    assert len(done) >= 2, seen
    assert all(p["bytes_total"] == size and p["name"] == "big_slow.safetensors"
               for p in downloading)
    assert 0 < done[0] < size
    assert [p["bytes_done"] for p in downloading] == sorted(p["bytes_done"] for p in downloading)
    assert (volume / "big_slow.safetensors").stat().st_size == size


def test_a_civitai_model_page_imports_the_newest_published_version_and_records_it(
        standin: StandIn, worker: Any, volume: Path) -> None:
    seen: list[Any] = []
    body = run(worker, import_input(standin, f"{standin.site}/civitai/models/10/moss-style"),
               watch=seen)
    assert body["status"] == "COMPLETED", body
    taken = {"model_id": 10, "version_id": 108, "name": "v108", "base_model": "SDXL 1.0",
             "chosen": "newest"}
    assert body["output"]["version"] == taken  # 109 is newer, but a draft
    assert body["output"]["model"]["name"] == "moss_style_v3.safetensors"
    assert body["output"]["model"]["trigger_words"] == ["mossy stone v3"]
    assert (volume / "moss_style_v3.safetensors").read_bytes() == standin.files[
        "moss_style_v3.safetensors"]
    assert any(p.get("version") == taken for p in seen), seen  # known while it downloads
    sidecar = json.loads((volume / "moss_style_v3.safetensors.meta.json").read_text())
    assert sidecar["source"] == {
        "kind": "civitai", "url": f"{standin.site}/civitai/models/10/moss-style",
        "model_id": 10, "version_id": 108, "version_name": "v108", "base_model": "SDXL 1.0",
        "chosen": "newest"}
    assert [h.path for h in standin.hits if h.server == "site"][:2] == [
        "/civitai/api/v1/models/10", "/civitai/api/download/models/108"]


def test_a_version_made_for_another_base_model_is_refused_before_any_download(
        standin: StandIn, worker: Any, volume: Path) -> None:
    err = error_of(run(worker, import_input(standin, f"{standin.site}/civitai/models/20")))
    assert err["code"] == "lora_incompatible"
    assert "CivitAI model version 201 (v201) is made for SD 1.5, not SDXL" in err["message"]
    assert [h for h in standin.hits if h.server == "storage"] == []
    assert not volume.exists() or list(volume.iterdir()) == []


def test_a_cancelled_import_stops_downloading_and_leaves_nothing_on_the_volume(
        standin: StandIn, worker: Any, volume: Path) -> None:
    # the server sends one chunk, then goes quiet: the cancel must wake the waiting read
    standin.hold_after = 64 * 1024
    headers = {"authorization": f"Bearer {worker.api_key}"}
    payload = import_input(standin, f"{standin.site}/civitai/api/download/models/104")
    with httpx.Client(base_url=worker.url + "/upscale", headers=headers, timeout=10) as http:
        job_id = http.post("/run", json={"input": payload}).json()["id"]
        deadline = time.monotonic() + 30
        while True:  # until bytes are arriving on the volume
            body = http.get(f"/status/{job_id}").json()
            out = body.get("output") or {}
            if body["status"] == "IN_PROGRESS" and out.get("bytes_done", 0) > 0:
                break
            assert body["status"] not in ("COMPLETED", "FAILED"), body
            assert time.monotonic() < deadline, body
            time.sleep(0.02)
        assert [p for p in volume.iterdir() if p.name.endswith(".aat-tmp")], "no temp file yet"
        assert http.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"
        canceled_at = time.monotonic()
        while (body := http.get(f"/status/{job_id}").json())["status"] == "IN_PROGRESS":
            assert time.monotonic() < deadline, body
            time.sleep(0.02)
    assert body["status"] == "CANCELLED", body
    # not after the download's 60 s read timeout (a bound for a loaded machine, not a wait)
    assert time.monotonic() - canceled_at < 15.0, "the quiet download was not interrupted"
    assert list(volume.iterdir()) == [], "a cancelled import left something on the volume"
    [download] = standin.slow_downloads
    while not download.cut:  # the worker closed the connection: it stopped downloading
        assert time.monotonic() < deadline, download
        time.sleep(0.02)
    assert list_models(worker) == []
