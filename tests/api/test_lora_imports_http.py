"""LoRA import by URL over the service's REST API (``/v1/models/imports``): the service starts
the upscale worker's ``import_model`` on the RunPod emulator (the real worker handler), the
worker downloads from a loopback CivitAI / Hugging Face stand-in, and the service reads its
progress. Also: abandoned chunked uploads are swept."""

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
from lora_standin import TOKEN, StandIn
from proc_helpers import aat_command, scrubbed_env

IMPORTS = "/v1/models/imports"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn(slow_bytes=3 * 1024 * 1024, slow_seconds=2.5).start()
    yield server
    server.stop()


@pytest.fixture
def service(live_server: Any, runpod_emulator: Any, runpod_settings: Any, standin: StandIn,
            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The API on an emulated upscale endpoint that runs the real upscale worker handler."""
    from workers.upscale.handler import handler

    monkeypatch.setenv("AAT_LORA_DIR", str(tmp_path / "volume"))
    monkeypatch.delenv("AAT_CIVITAI_TOKEN", raising=False)

    def start(**overrides: Any) -> Any:
        emulator = runpod_emulator(workers=2, handler=handler, endpoints=("upscale",))
        values = {"runpod_caption_endpoint_id": None,
                  "civitai_base_url": standin.site + "/civitai",
                  "huggingface_base_url": standin.site + "/hf",
                  "lora_import_http_hosts": standin.http_hosts, **overrides}
        settings = runpod_settings(emulator, **values)
        return live_server(settings)

    return start


def follow(http: httpx.Client, import_id: str, timeout_s: float = 60.0,
           until: Any = None) -> list[dict[str, Any]]:
    """Every state the API reported, polling like the studio does, until done or failed (or
    until ``until(state)`` holds)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = http.get(f"{IMPORTS}/{import_id}")
        assert resp.status_code == 200, resp.text
        seen.append(resp.json())
        if seen[-1]["state"] in ("done", "failed", "canceled") or (until and until(seen[-1])):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} did not finish: {seen[-1:]}")


def downloading(state: dict[str, Any]) -> bool:
    return state["state"] == "downloading" and state["bytes_done"] > 0


def test_a_civitai_import_reports_progress_then_lists_the_lora_with_its_trigger_words(
        service: Any, standin: StandIn, tmp_path: Path) -> None:
    server = service()
    with server.client() as http:
        url = f"{standin.site}/civitai/models/10/slow?modelVersionId=104"
        start = http.post(IMPORTS, json={"url": url})
        assert start.status_code == 202, start.text
        item = start.json()
        assert (item["state"], item["source"], item["url"]) == ("queued", "civitai", url)
        assert start.headers["location"] == f"{IMPORTS}/{item['id']}"

        seen = follow(http, item["id"])
        size = len(standin.files["big_slow.safetensors"])
        moving = [s for s in seen if s["state"] == "downloading" and 0 < s["bytes_done"] < size]
        assert moving, [(s["state"], s["bytes_done"]) for s in seen]
        assert all(s["bytes_total"] == size for s in moving)
        assert [s["bytes_done"] for s in moving] == sorted(s["bytes_done"] for s in moving)
        done = seen[-1]
        assert done["state"] == "done", done
        assert (done["bytes_done"], done["bytes_total"]) == (size, size)
        assert done["model"]["name"] == "big_slow.safetensors"
        assert done["model"]["trigger_words"] == ["slow words"]

        models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert models["big_slow.safetensors"]["trigger_words"] == ["slow words"]
        assert models["big_slow.safetensors"]["sha256"] == standin.sha256("big_slow.safetensors")
        assert models["big_slow.safetensors"]["size_bytes"] == size
        assert (tmp_path / "volume" / "big_slow.safetensors").stat().st_size == size

        listed = http.get(IMPORTS).json()["imports"]
        assert [(i["id"], i["state"]) for i in listed] == [(item["id"], "done")]
    # the bytes went from the stand-in's storage host to the worker, not through the service
    assert [h.path.split("?")[0] for h in standin.hits if h.server == "storage"] == [
        "/files/big_slow.safetensors"]


def test_bad_urls_are_refused_at_once_and_nothing_is_started(
        service: Any, standin: StandIn) -> None:
    server = service()
    cases = [
        ("https://example.com/x.safetensors", "import_url_unsupported", "neither"),
        (f"{standin.site}/civitai/models/10?modelVersionId=v3", "import_url_unsupported",
         "modelVersionId is not a number"),
        (f"{standin.site}/hf/a/b/resolve/main/model.ckpt", "model_invalid", "safetensors"),
    ]
    with server.client() as http:
        for url, code, words in cases:
            resp = http.post(IMPORTS, json={"url": url})
            assert resp.status_code == 422, resp.text
            assert resp.json()["code"] == code
            assert words in resp.json()["detail"]
        bad_name = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/api/download/"
                                                   "models/101", "name": "../evil.safetensors"})
        assert bad_name.status_code == 422
        assert http.get(IMPORTS).json()["imports"] == []
    assert standin.hits == [], "nothing was downloaded"


def test_plain_http_needs_the_explicit_allow_list(service: Any, standin: StandIn) -> None:
    server = service(lora_import_http_hosts=[])
    with server.client() as http:
        resp = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/api/download/models/101"})
        assert resp.status_code == 422 and resp.json()["code"] == "import_url_insecure"
        assert "AAT_LORA_IMPORT_HTTP_HOSTS" in resp.json()["detail"]


def test_a_civitai_401_tells_which_setting_to_set_and_the_token_is_never_shown(
        service: Any, standin: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        ) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{standin.site}/civitai/api/download/models/103"
    with service().client() as http:
        failed = follow(http, http.post(IMPORTS, json={"url": url}).json()["id"])[-1]
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "import_unauthorized"
    assert "set AAT_CIVITAI_TOKEN" in failed["error"]["message"]
    assert not (tmp_path / "volume" / "private.safetensors").exists()

    with service(civitai_token=TOKEN).client() as http:
        start = http.post(IMPORTS, json={"url": url + f"?token={TOKEN}",
                                         "name": "my private.safetensors"})
        assert TOKEN not in start.text, "a token pasted into the URL is not kept"
        done = follow(http, start.json()["id"])[-1]
        assert done["state"] == "done", done
        assert done["model"]["name"] == "my private.safetensors"
        assert TOKEN not in http.get(IMPORTS).text
    storage = [h for h in standin.hits if h.server == "storage"]
    assert storage and all(h.auth is None for h in storage), "token sent to the storage host"
    assert TOKEN not in caplog.text
    records = list((tmp_path / "data" / "imports").iterdir())
    assert records and all(TOKEN not in p.read_text() for p in records)


def test_imports_need_a_gpu_backend(queued_server: Any) -> None:
    with queued_server(backend="none").client() as http:
        resp = http.post(IMPORTS, json={"url": "https://civitai.com/api/download/models/1"})
        assert resp.status_code == 503 and resp.json()["code"] == "backend_unavailable"


def test_abandoned_chunked_uploads_are_removed_at_start_and_when_an_upload_starts(
        live_server: Any, tmp_path: Path) -> None:
    from service.settings import load_settings

    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True)
    day_ago = time.time() - 25 * 3600
    for stem in ("a" * 32, "b" * 32):
        for suffix in (".part", ".json"):
            (uploads / (stem + suffix)).write_text("{}" if suffix == ".json" else "x")
        if stem.startswith("a"):
            for suffix in (".part", ".json"):
                os.utime(uploads / (stem + suffix), (day_ago, day_ago))
    settings = load_settings(data_dir=tmp_path / "data", backend="none", broker_url=None,
                             database_url=None, upload_max_age_s=3600)
    server = live_server(settings)
    with server.client() as http:
        assert http.get("/v1/health").status_code == 200
        assert sorted(p.name for p in uploads.iterdir()) == ["b" * 32 + ".json", "b" * 32 + ".part"]

        hour_ago = time.time() - 3700
        for p in uploads.iterdir():  # the fresh one is left unfinished for over an hour too
            os.utime(p, (hour_ago, hour_ago))
        started = http.post("/v1/models/uploads", json={"filename": "new.safetensors",
                                                        "size": 100})
        assert started.status_code == 201, started.text
        new = started.json()["id"]
        assert sorted(p.stem for p in uploads.iterdir()) == [new, new]


def test_aat_models_import_follows_the_import_to_its_end(
        service: Any, standin: StandIn, tmp_path: Path) -> None:
    import subprocess
    import sys

    server = service()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(AAT_SERVER_URL=server.url, AAT_DATA_DIR=str(tmp_path / "cli"),
               AAT_CONFIG=str(tmp_path / "none.toml"))
    root = Path(__file__).resolve().parents[2]

    def aat(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "models", *args], cwd=root,
                              env=env, capture_output=True, text=True, timeout=120)

    ok = aat("import", f"{standin.site}/civitai/models/10?modelVersionId=101",
             "--name", "moss.safetensors")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (f"imported moss.safetensors "
                                 f"({len(standin.files['moss_style.safetensors'])} bytes) "
                                 "from CivitAI model version 101 (v101, Illustrious); "
                                 "trigger words: mossy stone, mst_style")
    newest = aat("import", f"{standin.site}/civitai/models/10/moss-style")
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout.strip() == (
        f"imported moss_style_v3.safetensors ({len(standin.files['moss_style_v3.safetensors'])}"
        " bytes) from CivitAI model version 108 (v108, SDXL 1.0; the model's newest); "
        "trigger words: mossy stone v3")
    refused = aat("import", f"{standin.site}/civitai/models/10?modelVersionId=102")
    assert refused.returncode == 2
    assert "error [model_invalid]" in refused.stderr and "no safetensors file" in refused.stderr


def test_the_local_backend_imports_with_the_worker_s_own_code(
        live_server: Any, standin: StandIn, tmp_path: Path) -> None:
    from service.backends.local import LocalBackend
    from service.settings import load_settings

    settings = load_settings(data_dir=tmp_path / "data", backend="none", broker_url=None,
                             database_url=None, civitai_base_url=standin.site + "/civitai",
                             huggingface_base_url=standin.site + "/hf",
                             lora_import_http_hosts=standin.http_hosts)
    backend = LocalBackend(settings, device="cpu", upscale=object(), caption=object(),
                           lora_dir=tmp_path / "local-loras")
    server = live_server(settings, backend=backend)
    with server.client() as http:
        url = f"{standin.site}/hf/pixel-lab/pixel-art-xl/blob/main/pixel_art.safetensors"
        done = follow(http, http.post(IMPORTS, json={"url": url}).json()["id"])[-1]
        assert done["state"] == "done", done
        assert done["model"]["trigger_words"] == ["pxlart", "16-bit sprite"]
    assert (tmp_path / "local-loras" / "pixel_art.safetensors").read_bytes() == standin.files[
        "pixel_art.safetensors"]


def test_an_import_nobody_watches_still_records_its_result(
        service: Any, standin: StandIn, tmp_path: Path) -> None:
    """The service follows what it started: the record reaches `done` with no client polling
    (RunPod forgets a finished job after 30 minutes)."""

    server = service()
    with server.client() as http:
        item = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/api/download/models/101"}
                         ).json()
    record = tmp_path / "data" / "imports" / f"{item['id']}.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = json.loads(record.read_text())["import"]
        if state["state"] == "done":
            break
        time.sleep(0.1)
    assert state["state"] == "done", state
    assert state["model"]["name"] == "moss_style.safetensors"


def test_a_restarted_service_resumes_following_unfinished_imports(
        live_server: Any, runpod_emulator: Any, runpod_settings: Any, standin: StandIn,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import started by an earlier run of the service (its record still `queued`) is
    followed again from start-up and reaches `done`."""
    import asyncio

    from service.api.lora_imports import LoraImport, _save, worker_request
    from service.backends.runpod.backend import RunPodBackend
    from service.core.lora_sources import resolve_source
    from workers.upscale.handler import handler

    monkeypatch.setenv("AAT_LORA_DIR", str(tmp_path / "volume"))
    emulator = runpod_emulator(workers=1, handler=handler, endpoints=("upscale",))
    settings = runpod_settings(emulator, runpod_caption_endpoint_id=None,
                               civitai_base_url=standin.site + "/civitai",
                               lora_import_http_hosts=standin.http_hosts)
    source = resolve_source(f"{standin.site}/civitai/api/download/models/101",
                            civitai_base=settings.civitai_base_url)

    async def start_elsewhere() -> str:
        backend = RunPodBackend(settings)
        try:
            return await backend.start_import(worker_request(settings, source, None))
        finally:
            await backend.aclose()

    remote_id = asyncio.run(start_elsewhere())
    item = LoraImport(id="c" * 32, url=source.url, source="civitai", name=None, state="queued",
                      created_at=time.time(), updated_at=time.time())
    _save(settings, item, remote_id)
    live_server(settings)  # the service starts, finds the unfinished record, follows it
    record = tmp_path / "data" / "imports" / f"{'c' * 32}.json"
    deadline = time.monotonic() + 30
    while json.loads(record.read_text())["import"]["state"] != "done":
        assert time.monotonic() < deadline, record.read_text()
        time.sleep(0.1)
    assert (tmp_path / "volume" / "moss_style.safetensors").exists()


def test_a_civitai_model_page_imports_its_newest_version_and_says_which(
        service: Any, standin: StandIn, tmp_path: Path) -> None:
    server = service()
    with server.client() as http:
        url = f"{standin.site}/civitai/models/10/moss-style"  # as copied from the address bar
        seen = follow(http, http.post(IMPORTS, json={"url": url}).json()["id"])
        done = seen[-1]
        assert done["state"] == "done", done
        assert done["version"] == {"model_id": 10, "version_id": 108, "name": "v108",
                                   "base_model": "SDXL 1.0", "chosen": "newest"}
        assert done["model"]["name"] == "moss_style_v3.safetensors"
        refused = follow(http, http.post(IMPORTS, json={
            "url": f"{standin.site}/civitai/models/20"}).json()["id"])[-1]
        assert refused["state"] == "failed"
        assert refused["error"]["code"] == "lora_incompatible"
        assert "made for SD 1.5, not SDXL" in refused["error"]["message"]
        assert [m["name"] for m in http.get("/v1/models").json()["models"]] == [
            "moss_style_v3.safetensors"]
    sidecar = json.loads((tmp_path / "volume" / "moss_style_v3.safetensors.meta.json")
                         .read_text())
    assert (sidecar["source"]["version_id"], sidecar["source"]["chosen"]) == (108, "newest")


def test_a_running_import_is_canceled_over_http_and_leaves_nothing_on_the_volume(
        live_server: Any, runpod_emulator: Any, runpod_settings: Any, standin: StandIn,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.upscale.handler import handler

    volume = tmp_path / "volume"
    monkeypatch.setenv("AAT_LORA_DIR", str(volume))
    standin.hold_after = 64 * 1024  # the download cannot end before the cancel arrives
    emulator = runpod_emulator(workers=1, handler=handler, endpoints=("upscale",))
    server = live_server(runpod_settings(
        emulator, runpod_caption_endpoint_id=None, civitai_base_url=standin.site + "/civitai",
        lora_import_http_hosts=standin.http_hosts))
    with server.client() as http:
        item = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/api/download/models/104"}
                         ).json()
        assert downloading(follow(http, item["id"], until=downloading)[-1])
        canceled = http.post(f"{IMPORTS}/{item['id']}/cancel")
        assert canceled.status_code == 202, canceled.text
        assert canceled.json()["state"] == "canceled"
        deadline = time.monotonic() + 30
        while emulator.stats("upscale")["by_status"].get("CANCELLED") != 1:  # cleaned up
            assert time.monotonic() < deadline, emulator.stats("upscale")
            time.sleep(0.05)
        assert list(volume.iterdir()) == [], "a canceled import left something on the volume"
        [download] = standin.slow_downloads
        while not download.cut:  # the worker closed the connection: it stopped downloading
            assert time.monotonic() < deadline, download
            time.sleep(0.02)
        assert http.get("/v1/models").json()["models"] == []
        again = http.post(f"{IMPORTS}/{item['id']}/cancel")  # ended: unchanged, 200
        assert (again.status_code, again.json()["state"]) == (200, "canceled")
        assert http.get(f"{IMPORTS}/{item['id']}").json()["state"] == "canceled"
        assert http.post(f"{IMPORTS}/{'f' * 32}/cancel").status_code == 404

        # canceled on RunPod's side (its console, another client): the import says so
        other = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/models/10/slow?"
                                                "modelVersionId=104"}).json()
        assert downloading(follow(http, other["id"], until=downloading)[-1])
        [job_id] = [json.loads(p.read_text())["remote_id"]
                    for p in (tmp_path / "data" / "imports").glob(f"{other['id']}.json")]
        httpx.post(f"{emulator.url}/upscale/cancel/{job_id}",
                   headers={"authorization": f"Bearer {emulator.api_key}"}).raise_for_status()
        assert follow(http, other["id"])[-1]["state"] == "canceled"
        assert list(volume.iterdir()) == []


def test_the_local_backend_cancels_an_import_and_records_uploads_like_the_worker(
        live_server: Any, runpod_emulator: Any, runpod_settings: Any, standin: StandIn,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel on the local backend; and an upload through either backend is recorded with
    the same facts (the local one sends no sha256, the worker computes it either way)."""
    import hashlib

    from lora_standin import safetensors_bytes

    from service.backends.local import LocalBackend
    from service.settings import load_settings
    from workers.upscale.handler import handler

    local_dir = tmp_path / "local-loras"
    settings = load_settings(data_dir=tmp_path / "local-data", backend="none", broker_url=None,
                             database_url=None, civitai_base_url=standin.site + "/civitai",
                             lora_import_http_hosts=standin.http_hosts)
    backend = LocalBackend(settings, device="cpu", upscale=object(), caption=object(),
                           lora_dir=local_dir)
    local = live_server(settings, backend=backend)
    monkeypatch.setenv("AAT_LORA_DIR", str(tmp_path / "volume"))
    remote = live_server(runpod_settings(
        runpod_emulator(workers=1, handler=handler, endpoints=("upscale",)),
        runpod_caption_endpoint_id=None))
    standin.hold_after = 64 * 1024
    with local.client() as http:
        item = http.post(IMPORTS, json={"url": f"{standin.site}/civitai/api/download/models/104"}
                         ).json()
        assert downloading(follow(http, item["id"], until=downloading)[-1])
        canceled = http.post(f"{IMPORTS}/{item['id']}/cancel")
        assert (canceled.status_code, canceled.json()["state"]) == (202, "canceled")
        assert list(local_dir.iterdir()) == []  # the local cancel waits for the cleanup
        assert standin.slow_downloads[-1].cut

    data = safetensors_bytes(2048, {"modelspec.trigger_phrase": "grainy"})
    answers, lists = [], []
    for server in (local, remote):
        with server.client() as http:
            up = http.post("/v1/models", params={"filename": "grain.safetensors"}, content=data)
            assert up.status_code == 201, up.text
            answers.append(up.json())
            lists.append(http.get("/v1/models").json()["models"])
    expected = {"name": "grain.safetensors", "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "trigger_words": ["grainy"]}
    assert answers == [expected, expected]
    assert lists == [[expected], [expected]]


def test_ctrl_c_on_aat_models_import_cancels_the_import(
        service: Any, standin: StandIn, tmp_path: Path) -> None:
    import signal
    import subprocess

    standin.hold_after = 64 * 1024  # the download waits until the cancel
    server = service()
    env = scrubbed_env(AAT_SERVER_URL=server.url, AAT_DATA_DIR=str(tmp_path / "cli"),
                       AAT_CONFIG=str(tmp_path / "none.toml"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(  # aat_command: with Ctrl-C on, as in a terminal
        aat_command("models", "import", f"{standin.site}/civitai/api/download/models/104"),
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    seen: list[str] = []  # the follower's lines before Ctrl-C (said if the test fails)
    started = time.monotonic()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the follower's lines, as they come
            seen.append(f"{time.monotonic() - started:.1f}s {line.rstrip()}")
            if line.startswith("downloading: big_slow.safetensors"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (seen, err)
    assert "canceled the import of big_slow.safetensors; nothing was kept" in err
    with server.client() as http:
        [item] = http.get(IMPORTS).json()["imports"]
        assert item["state"] == "canceled"
        deadline = time.monotonic() + 30
        while not standin.slow_downloads[-1].cut:  # the worker let go of the download
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.get("/v1/models").json()["models"] == []
    assert not any((tmp_path / "volume").iterdir())
