"""LoRA management over real HTTP, proxied through RunPodBackend to the RunPod emulator that
serves the echo worker (which keeps LoRAs with the upscale worker's own rules)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct

import httpx
import numpy as np


def safetensors_bytes(n: int = 64) -> bytes:
    """A well-formed safetensors file holding one float32 tensor of ``n`` values."""
    data = np.arange(n, dtype=np.float32).tobytes()
    header = json.dumps({"lora_up.weight": {"dtype": "F32", "shape": [n],
                                            "data_offsets": [0, len(data)]}}).encode()
    return struct.pack("<Q", len(header)) + header + data


def test_models_list_upload_delete(live_server, runpod_emulator, runpod_settings) -> None:
    emulator = runpod_emulator(workers=1)
    server = live_server(runpod_settings(emulator, max_model_bytes=64 * 1024))
    octet = {"Content-Type": "application/octet-stream"}
    with server.client() as http:
        assert http.get("/v1/models").json() == {"models": []}
        body = safetensors_bytes()
        up = http.post("/v1/models", params={"filename": "moss.safetensors"}, content=body,
                       headers=octet)
        assert up.status_code == 201, up.text
        assert up.json()["name"] == "moss.safetensors"
        assert up.json()["size_bytes"] == len(body)
        listed = http.get("/v1/models").json()["models"]
        assert [(m["name"], m["size_bytes"]) for m in listed] == [("moss.safetensors", len(body))]

        bad = [
            (http.post("/v1/models", params={"filename": "evil.safetensors"},
                       content=pickle.dumps({"x": 1}), headers=octet), 422, "model_invalid"),
            (http.post("/v1/models", params={"filename": "cut.safetensors"},
                       content=body[:-8], headers=octet), 422, "model_invalid"),
            (http.post("/v1/models", params={"filename": "moss.ckpt"}, content=body,
                       headers=octet), 422, "invalid_params"),  # the name rule is in OpenAPI
            (http.post("/v1/models", params={"filename": "../x.safetensors"}, content=body,
                       headers=octet), 422, "invalid_params"),
            (http.post("/v1/models", params={"filename": "big.safetensors"},
                       content=safetensors_bytes(20_000), headers=octet), 413,
             "payload_too_large"),
        ]
        for resp, status, code in bad:
            assert (resp.status_code, resp.json()["code"]) == (status, code), resp.text
        assert len(http.get("/v1/models").json()["models"]) == 1, "refused uploads stored nothing"

        assert http.delete("/v1/models/moss.safetensors").status_code == 204
        assert http.get("/v1/models").json() == {"models": []}
        gone = http.delete("/v1/models/moss.safetensors")
        assert gone.status_code == 404, gone.text

        ready = http.get("/v1/ready").json()
        assert ready["checks"]["gpu"]["ok"] is True
        assert "runpod" in ready["checks"]["gpu"]["detail"]


def test_models_without_backend_is_503(queued_server) -> None:
    with queued_server(backend="none").client() as http:
        for resp in (http.get("/v1/models"), http.delete("/v1/models/a.safetensors"),
                     http.post("/v1/models", params={"filename": "a.safetensors"},
                               content=safetensors_bytes())):
            assert resp.status_code == 503
            body = resp.json()
            assert body["code"] == "backend_unavailable"
            assert body["detail"] == ("no GPU backend configured; set RUNPOD_API_KEY and "
                                      "RUNPOD_UPSCALE_ENDPOINT_ID")


def test_ready_describes_the_gpu_endpoints_in_words(live_server, runpod_emulator,
                                                   runpod_settings) -> None:
    """`GET /v1/ready` (the studio's System page shows its details) words the endpoints as
    `aat doctor` does, never as a Python dict."""
    emulator = runpod_emulator(workers=2)
    with live_server(runpod_settings(emulator)).client() as http:
        gpu = http.get("/v1/ready").json()["checks"]["gpu"]
    assert gpu == {"ok": True, "detail": (
        "runpod: upscale endpoint upscale: workers 2 idle, 0 running; jobs 0 queued, 0 in "
        "progress, 0 failed; caption endpoint caption: workers 2 idle, 0 running; jobs 0 "
        "queued, 0 in progress, 0 failed")}


def test_doctor_checks_the_runpod_endpoints_and_the_api(
    live_server, runpod_emulator, runpod_settings, monkeypatch, tmp_path
) -> None:
    from service.cli.doctor import run_checks

    emulator = runpod_emulator(workers=1)
    server = live_server(runpod_settings(emulator))
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith(("AAT_", "RUNPOD_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AAT_SERVER_URL", server.url)
    monkeypatch.setenv("AAT_RUNPOD_BASE_URL", emulator.url)
    monkeypatch.setenv("RUNPOD_UPSCALE_ENDPOINT_ID", "upscale")
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    checks = {c.name: c for c in run_checks()}
    assert all(c.ok for c in checks.values()), checks
    assert checks["gpu"].detail.startswith("runpod: ")
    assert checks["api"].detail.endswith("ready")

    monkeypatch.setenv("RUNPOD_API_KEY", "not-the-key")
    gpu = {c.name: c for c in run_checks()}["gpu"]
    assert not gpu.ok and "RUNPOD_API_KEY" in gpu.detail


def test_a_job_naming_an_unknown_lora_is_refused_at_submit(
        live_server, runpod_emulator, runpod_settings) -> None:
    """Checked against the worker's list when submitted (not at refine time on a paid GPU),
    and a LoRA uploaded through the API is known at once."""
    from apitest_helpers import png_bytes

    emulator = runpod_emulator(workers=1)
    server = live_server(runpod_settings(emulator))
    octet = {"Content-Type": "application/octet-stream"}
    with server.client() as http:
        unknown = http.post("/v1/jobs", params={"filename": "a.png", "loras": "moss.safetensors"},
                            content=png_bytes(), headers={"Content-Type": "image/png"})
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["code"] == "lora_not_found"
        assert "moss.safetensors" in unknown.json()["detail"]
        assert "upload it first" in unknown.json()["detail"]
        assert http.get("/v1/jobs").json()["items"] == []  # no job was created
        assert http.post("/v1/models", params={"filename": "moss.safetensors"},
                         content=safetensors_bytes(), headers=octet).status_code == 201
        known = http.post("/v1/jobs", params={"filename": "a.png", "loras": "moss.safetensors:0.7"},
                          content=png_bytes(), headers={"Content-Type": "image/png"})
        assert known.status_code == 202, known.text
        assert known.json()["params"]["loras"] == [{"name": "moss.safetensors", "weight": 0.7}]


def test_loras_without_a_gpu_backend_are_refused_at_submit(queued_server) -> None:
    from apitest_helpers import png_bytes

    with queued_server(backend="none").client() as http:
        none = http.post("/v1/jobs", params={"filename": "a.png", "loras": "moss.safetensors"},
                         content=png_bytes(), headers={"Content-Type": "image/png"})
        assert none.status_code == 422 and none.json()["code"] == "lora_unavailable", none.text
        assert http.get("/v1/jobs").json()["items"] == []


def test_the_emulated_worker_refuses_unknown_loras_like_the_real_one(runpod_emulator) -> None:
    import httpx

    from service.core.contracts import TileIn, UpscaleRequest
    from service.core.params import LoraSpec
    from workers.common.imageref import encode_image_ref

    emulator = runpod_emulator(workers=1)
    tile = TileIn(tile_id="0", image=encode_image_ref(np.zeros((8, 8, 3), np.uint8)), seed=1)
    request = UpscaleRequest(tiles=[tile], loras=[LoraSpec(name="ghost.safetensors")])
    resp = httpx.post(f"{emulator.url}/upscale/runsync",
                      headers={"Authorization": f"Bearer {emulator.api_key}"},
                      json={"input": request.model_dump(mode="json")}, timeout=30)
    body = resp.json()
    assert body["status"] == "FAILED", body
    err = json.loads(body["error"])
    assert err["code"] == "lora_not_found" and err["retryable"] is False, err


def test_one_chunk_sent_twice_at_once_is_written_once(
        live_server, runpod_emulator, runpod_settings, monkeypatch) -> None:
    """Two PUTs of the same chunk in flight together: the second waits for the first and is
    taken as sent again, so the rest follows at the right offset and the upload finishes."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from service.api import lora_uploads

    at_write = threading.Barrier(2, timeout=2.0)  # met only if both chunks pass the check
    passed: list[str] = []

    def hold(upload_id: str) -> None:
        passed.append(upload_id)
        with contextlib.suppress(threading.BrokenBarrierError):  # the other copy waits
            at_write.wait()

    monkeypatch.setattr(lora_uploads, "after_offset_check", hold)
    emulator = runpod_emulator(workers=1)
    server = live_server(runpod_settings(emulator, max_model_bytes=64 * 1024))
    body = safetensors_bytes(256)
    half = len(body) // 2
    octet = {"Content-Type": "application/octet-stream"}
    with server.client() as http:
        up = http.post("/v1/models/uploads", json={"filename": "twice.safetensors",
                                                   "size": len(body)}).json()

        def put_first_half() -> httpx.Response:
            with server.client() as own:
                return own.put(f"/v1/models/uploads/{up['id']}", params={"offset": 0},
                               content=body[:half], headers=octet)

        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: put_first_half(), range(2)))
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        assert [r.json()["received"] for r in replies] == [half, half], "written once"
        assert len(passed) == 1, "the second copy saw the first one's bytes"
        rest = http.put(f"/v1/models/uploads/{up['id']}", params={"offset": half},
                        content=body[half:], headers=octet)
        assert rest.status_code == 200 and rest.json()["received"] == len(body), rest.text
        done = http.post(f"/v1/models/uploads/{up['id']}/finish")
        assert done.status_code == 201, done.text
        assert done.json()["size_bytes"] == len(body)
