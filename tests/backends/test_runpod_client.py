"""RunPod client details: worker error shapes, backoff bounds, polling, and the non-tile calls
(caption, LoRA management, health, /runsync) against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from service.backends.runpod import RunPodBackend
from service.backends.runpod.client import (
    PollPolicy,
    RetryPolicy,
    RunPodClient,
    parse_worker_error,
)
from service.core.contracts import WorkerErrorData
from service.core.errors import BackendError, BackendUnavailable, ParamsError, WorkerError
from workers.emulator.echo import describe


def _run(backend: RunPodBackend, coro_fn: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro_fn()
        finally:
            await backend.aclose()

    return asyncio.run(go())


# ---- worker error shapes ------------------------------------------------------------------


def test_our_structured_worker_error_keeps_code_and_retryable():
    raw = WorkerErrorData(code="cuda_oom", message="out of VRAM; use smaller tiles",
                          retryable=True).to_output()["error"]
    err = parse_worker_error(raw)
    assert isinstance(err, WorkerError)
    assert (err.code, err.message, err.retryable) == ("cuda_oom", "out of VRAM; use smaller tiles",
                                                      True)


def test_a_known_code_maps_to_its_error_class():
    err = parse_worker_error(json.dumps({"code": "invalid_params", "message": "steps > 100"}))
    assert isinstance(err, ParamsError) and not err.retryable


def test_the_sdk_exception_shape_is_parsed():
    raw = json.dumps({"error_type": "<class 'torch.OutOfMemoryError'>",
                      "error_message": "CUDA out of memory", "error_traceback": "Traceback ...",
                      "hostname": "h", "worker_id": "w1", "runpod_version": "1.12.0"})
    err = parse_worker_error(raw)
    assert err.code == "worker_crashed" and err.retryable  # OOM may pass on another worker
    other = parse_worker_error(json.dumps({"error_type": "<class 'KeyError'>",
                                           "error_message": "'unet'"}))
    assert other.code == "worker_crashed" and other.retryable  # any unexplained crash
    assert err.message == "worker crashed: torch.OutOfMemoryError: CUDA out of memory"
    assert err.detail["worker_id"] == "w1"


@pytest.mark.parametrize("raw", ["plain text failure", {"weird": [1, 2]}, 42])
def test_unknown_error_shapes_are_kept_verbatim(raw):
    err = parse_worker_error(raw)
    assert isinstance(err, WorkerError) and not err.retryable
    assert err.detail["raw"] == raw


# ---- backoff and polling ----------------------------------------------------------------


def test_backoff_grows_is_jittered_and_bounded():
    policy = RetryPolicy(attempts=8, base_s=0.5, max_s=4.0)
    for attempt in range(8):
        ceiling = min(4.0, 0.5 * 2**attempt)
        samples = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jittered


def test_polling_sleeps_until_the_expected_finish_then_polls_briefly():
    poll = PollPolicy(min_s=0.05, max_s=2.0)
    assert poll.delay(0.0, None) == 0.05  # nothing known yet: short
    assert poll.delay(30.0, None) == 2.0  # long jobs: capped
    assert poll.delay(0.0, 1.0) == pytest.approx(1.0)  # jump to the expected finish
    assert poll.delay(0.98, 1.0) == pytest.approx(0.05)
    assert poll.delay(2.0, 1.0) == pytest.approx(0.1)  # late: 5 % of the time waited


def test_connection_refused_is_retried_then_unavailable():
    async def go() -> None:
        client = RunPodClient("http://127.0.0.1:9/v2", "x", SecretStr("k"),
                              retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02))
        try:
            with pytest.raises(BackendUnavailable, match="gave up after 3 tries"):
                await client.health()
        finally:
            await client.aclose()

    asyncio.run(go())


# ---- non-tile calls -----------------------------------------------------------------------


def test_caption_comes_from_the_caption_endpoint(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu))
    image = np.full((24, 40, 3), (10, 20, 30), dtype=np.uint8)
    result = _run(backend, lambda: backend.caption("c1", image))
    assert result.caption == describe(image) == "a 40x24 tile, mean colour rgb(10, 20, 30)"
    assert result.accounting.attempts == 1
    assert emu.stats("caption")["submitted"] == 1 and emu.stats("upscale")["submitted"] == 0


def test_caption_without_a_caption_endpoint_says_which_setting(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu, runpod_caption_endpoint_id=None))
    with pytest.raises(Exception, match="RUNPOD_CAPTION_ENDPOINT_ID"):
        _run(backend, lambda: backend.caption("c1", np.zeros((8, 8, 3), np.uint8)))


def _safetensors(payload: bytes) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)],
                               "data_offsets": [0, len(payload)]}}).encode()
    return len(header).to_bytes(8, "little") + header + payload


def test_lora_upload_list_delete_round_trip(runpod_emulator, runpod_settings, monkeypatch):
    import service.backends.runpod.backend as rp

    monkeypatch.setattr(rp, "UPLOAD_CHUNK_BYTES", 1000)  # several chunks, several RunPod jobs
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu))
    data = _safetensors(bytes(range(256)) * 10)

    async def go() -> tuple[Any, Any, Any]:
        info = await backend.upload_model("style.safetensors", data)
        listed = await backend.list_models()
        await backend.delete_model("style.safetensors")
        return info, listed, await backend.list_models()

    info, listed, after = _run(backend, go)
    assert info.name == "style.safetensors" and info.size_bytes == len(data)
    assert [m.name for m in listed] == ["style.safetensors"]
    assert after == []
    chunks = -(-len(data) // 1000)
    assert emu.stats("upscale")["submitted"] == chunks + 3  # uploads, 2 lists, 1 delete


def test_upload_refuses_non_safetensors_before_sending(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(ParamsError, match="safetensors"):
        _run(backend, lambda: backend.upload_model("evil.ckpt", b"\x80\x04pickle"))
    assert emu.stats("upscale")["submitted"] == 0


def test_deleting_a_missing_lora_is_a_clear_worker_error(runpod_emulator, runpod_settings):
    emu = runpod_emulator()
    backend = RunPodBackend(runpod_settings(emu))
    with pytest.raises(BackendError) as info:
        _run(backend, lambda: backend.delete_model("ghost.safetensors"))
    assert info.value.code == "lora_not_found" and "upload it first" in info.value.message
    assert emu.stats("upscale")["submitted"] == 1  # not retried


def test_list_models_uses_runsync_and_polls_when_it_returns_early(
        runpod_emulator, runpod_settings, monkeypatch):
    import service.backends.runpod.backend as rp

    monkeypatch.setattr(rp, "RUNSYNC_WAIT_MS", 1000)  # the shortest wait RunPod allows
    emu = runpod_emulator(latency_s=1.4)
    backend = RunPodBackend(runpod_settings(emu))
    started = time.monotonic()
    assert _run(backend, backend.list_models) == []
    assert time.monotonic() - started >= 1.4  # the job ran its course
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["status_polls"] >= 1


def test_health_reports_workers_and_totals(runpod_emulator, runpod_settings):
    emu = runpod_emulator(workers=5)
    backend = RunPodBackend(runpod_settings(emu))
    health = _run(backend, backend.health)
    assert health["endpoints"]["upscale"]["workers"] == {"idle": 5, "running": 0}
    assert health["endpoints"]["caption"]["id"] == "caption"
    assert health["totals"]["runpod_jobs"] == 0


def test_max_concurrency_setting_wins_over_health(runpod_emulator, runpod_settings):
    emu = runpod_emulator(workers=5)
    backend = RunPodBackend(runpod_settings(emu, runpod_max_concurrency=2))
    assert _run(backend, backend.max_concurrency) == 2
    paired = RunPodBackend(runpod_settings(emu, runpod_max_concurrency=2,
                                           runpod_tiles_per_job=2))
    assert _run(paired, paired.max_concurrency) == 2 * 2  # 2 jobs of 2 tiles in flight


def test_retry_after_is_honoured(runpod_emulator, runpod_settings):
    from workers.emulator import Faults

    emu = runpod_emulator(faults=Faults.parse("429=1:2", retry_after_s=0.4))
    backend = RunPodBackend(runpod_settings(emu, runpod_max_concurrency=1))
    started = time.monotonic()
    _run(backend, backend.list_models)
    assert time.monotonic() - started >= 0.8  # two 429s, 0.4 s each, not the 0.01 s backoff
    assert emu.stats("upscale")["rejected"]["429"] == 2


def test_a_non_runpod_reply_is_a_clear_error():
    """A wrong base URL that answers 200 with a web page (a proxy, a login portal)."""
    import http.server
    import threading

    class Portal(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>please log in</html>")

        do_GET = do_POST = _page

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def go() -> None:
        client = RunPodClient(f"http://127.0.0.1:{server.server_port}/v2", "up", SecretStr("k"))
        try:
            with pytest.raises(BackendUnavailable) as info:
                await client.run({"action": "health"})
            assert info.value.code == "runpod_bad_response"
            assert "please log in" in info.value.message and "runpod_base_url" in info.value.message
        finally:
            await client.aclose()

    try:
        asyncio.run(go())
    finally:
        server.shutdown()


def test_request_key_names_the_work_not_the_attempt():
    from service.backends.runpod import request_key

    base = {"action": "upscale", "tiles": [{"tile_id": "t0", "seed": 1}], "steps": 30}
    same = {"steps": 30, "tiles": [{"seed": 1, "tile_id": "t0"}], "action": "upscale"}
    assert request_key(base) == request_key(same) == request_key({**base, "request_key": "x"})
    assert request_key(base) != request_key({**base, "steps": 31})
    assert len(request_key(base)) == 32
