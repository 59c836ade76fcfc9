"""The RunPod emulator behaves like a RunPod serverless endpoint, seen over real HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from proc_helpers import ServiceProcess, aat_command, free_port

from workers.emulator import EmulatorServer, EndpointConfig, Faults

ROOT = Path(__file__).resolve().parents[2]


class Api:
    """A bare HTTP client for one emulated endpoint (what RunPod users would curl)."""

    def __init__(self, emu: EmulatorServer, endpoint: str = "upscale") -> None:
        self.base = f"{emu.url}/{endpoint}"
        self.headers = {"authorization": f"Bearer {emu.api_key}"}

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return httpx.post(self.base + path, json=body, headers=self.headers, timeout=30, **kw)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.headers, timeout=30)

    def run(self, inp: dict[str, Any], **body: Any) -> str:
        resp = self.post("/run", {"input": inp, **body})
        assert resp.status_code == 200 and resp.json()["status"] == "IN_QUEUE"
        return str(resp.json()["id"])

    def wait(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(f"/status/{job_id}").json()
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                return dict(body)
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not finish")


def until(check: Any, timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (the machine may be busy; never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def echo(job: dict[str, Any]) -> Any:
    """A handler returning what it was asked to (or raising, or a huge output, on request)."""
    inp = job["input"]
    if "raise" in inp:
        raise ValueError(inp["raise"])
    if "big" in inp:
        return "x" * inp["big"]
    return inp.get("return", {"seen": inp})


def test_job_goes_through_queue_progress_and_completion(runpod_emulator):
    emu = runpod_emulator(handler=echo, workers=1, latency_s=1.0)
    api = Api(emu)
    job_id = api.run({"x": 1})
    assert api.get(f"/status/{job_id}").json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    body = api.wait(job_id)
    assert body["status"] == "COMPLETED" and body["output"] == {"seen": {"x": 1}}
    assert body["executionTime"] >= 1000 and body["delayTime"] >= 0 and body["workerId"]
    assert api.get(f"/status/{job_id}").json() == body  # readable again during retention


def test_auth_is_required_and_checked(runpod_emulator):
    emu = runpod_emulator(handler=echo)
    url = f"{emu.url}/upscale/run"
    assert httpx.post(url, json={"input": {}}).status_code == 401
    bad = httpx.post(url, json={"input": {}}, headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert emu.stats("upscale")["submitted"] == 0


def test_unknown_endpoint_and_unknown_job_are_404(runpod_emulator):
    emu = runpod_emulator(handler=echo)
    assert Api(emu, "nope").post("/run", {"input": {}}).status_code == 404
    assert Api(emu).get("/status/no-such-job").status_code == 404


class HandClock:
    """A clock the test moves (the emulator measures retention and TTL in it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_results_expire_after_retention_and_then_cannot_be_retried(runpod_emulator):
    clock = HandClock()
    emu = runpod_emulator(handler=echo, retention_s=30.0, clock=clock)
    api = Api(emu)
    job_id = api.run({"raise": "boom"})
    assert api.wait(job_id)["status"] == "FAILED"
    clock.now += 29.0
    assert api.get(f"/status/{job_id}").status_code == 200  # still within retention
    clock.now += 2.0
    assert api.get(f"/status/{job_id}").status_code == 404
    assert api.post(f"/retry/{job_id}").status_code == 404


def test_expired_results_are_dropped_without_being_asked_for(runpod_emulator):
    clock = HandClock()
    emu = runpod_emulator(handler=echo, retention_s=30.0, sweep_s=0.05, clock=clock)
    Api(emu).run({})
    until(lambda: emu.stats("upscale")["by_status"] == {"COMPLETED": 1})
    assert emu.stats("upscale")["jobs_held"] == 1
    clock.now += 31.0
    until(lambda: emu.stats("upscale")["jobs_held"] == 0)  # swept every 0.05 s
    assert emu.stats("upscale")["status_polls"] == 0  # nobody asked


def test_ttl_deletes_a_job_even_mid_run(runpod_emulator):
    clock = HandClock()
    emu = runpod_emulator(handler=echo, latency_s=2.0, clock=clock)
    api = Api(emu)
    job_id = api.run({}, policy={"ttl": 300_000})  # ms
    clock.now += 299.0
    assert api.get(f"/status/{job_id}").json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    clock.now += 2.0
    assert api.get(f"/status/{job_id}").status_code == 404


def test_execution_timeout_ends_timed_out(runpod_emulator):
    emu = runpod_emulator(handler=echo, latency_s=2.0)
    api = Api(emu)
    body = api.wait(api.run({}, policy={"executionTimeout": 200}))
    assert body["status"] == "TIMED_OUT" and "output" not in body


def test_handler_exception_fails_with_the_sdk_error_json(runpod_emulator):
    import json

    emu = runpod_emulator(handler=echo)
    api = Api(emu)
    body = api.wait(api.run({"raise": "bad tile"}))
    assert body["status"] == "FAILED"
    err = json.loads(body["error"])
    assert err["error_type"] == "<class 'ValueError'>" and err["error_message"] == "bad tile"
    assert "Traceback" in err["error_traceback"]


@pytest.mark.parametrize(("returned", "status", "has_output"), [
    ({"error": "plain failure"}, "FAILED", False),
    ({"error": {"code": "x"}}, "COMPLETED", False),  # runpod-python#299: dict errors vanish
    ({}, "COMPLETED", False),
    ({"ok": 1, "refresh_worker": True}, "COMPLETED", True),
    (None, "COMPLETED", False),  # output over the 10 MB result limit (see below)
])
def test_handler_results_are_mapped_like_the_sdk(runpod_emulator, returned, status, has_output):
    emu = runpod_emulator(handler=echo)
    api = Api(emu)
    inp = {"return": returned} if returned is not None else {"big": 10 * 1024 * 1024 + 10}
    body = api.wait(api.run(inp))
    assert body["status"] == status and ("output" in body) == has_output
    if has_output:
        assert body["output"] == {"ok": 1}


def test_body_limits_are_10_mb_for_run_and_20_mb_for_runsync(runpod_emulator):
    emu = runpod_emulator(handler=lambda job: {"n": len(job["input"]["blob"])})
    api = Api(emu)
    blob = "a" * (11 * 1024 * 1024)
    assert api.post("/run", {"input": {"blob": blob}}).status_code == 413
    resp = api.post("/runsync", {"input": {"blob": blob}})
    assert resp.status_code == 200 and resp.json()["output"] == {"n": len(blob)}
    assert api.post("/runsync", {"input": {"blob": blob * 2}}).status_code == 413
    assert emu.stats("upscale")["rejected"]["413"] == 2


def test_bad_bodies_are_400(runpod_emulator):
    emu = runpod_emulator(handler=echo)
    api = Api(emu)
    assert api.post("/run", {"nope": 1}).status_code == 400
    assert api.post("/run", {"input": [1]}).status_code == 400
    assert httpx.post(api.base + "/run", content=b"{", headers=api.headers).status_code == 400


def test_runsync_returns_inline_or_the_id_to_poll(runpod_emulator):
    emu = runpod_emulator(handler=echo, latency_s=1.5)
    api = Api(emu)
    early = api.post("/runsync?wait=1000", {"input": {"a": 1}}).json()
    assert early["id"].startswith("sync-") and early["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert "output" not in early
    assert api.wait(early["id"])["output"] == {"seen": {"a": 1}}


def test_cancel_in_queue_and_in_progress(runpod_emulator):
    emu = runpod_emulator(handler=echo, workers=1, latency_s=5.0)
    api = Api(emu)
    running, queued = api.run({"n": 1}), api.run({"n": 2})
    until(lambda: api.get("/health").json()["workers"]["running"] == 1)
    assert api.get("/health").json()["jobs"]["inQueue"] == 1
    for job_id in (queued, running):
        assert api.post(f"/cancel/{job_id}").json() == {"id": job_id, "status": "CANCELLED"}
    assert api.wait(running, timeout=4)["status"] == "CANCELLED"  # not after its 5 s
    assert api.get(f"/status/{queued}").json()["status"] == "CANCELLED"
    health = api.get("/health").json()
    assert health["workers"] == {"idle": 1, "running": 0}
    assert emu.stats("upscale")["canceled"] == 2 and emu.stats("upscale")["started"] == 1


def test_retry_requeues_a_failed_job_with_the_same_id(runpod_emulator):
    emu = runpod_emulator(handler=echo, faults="failed=1:1")
    api = Api(emu)
    job_id = api.run({"k": 1})
    assert api.wait(job_id)["status"] == "FAILED"
    assert api.post(f"/retry/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    assert api.wait(job_id)["status"] == "COMPLETED"
    assert api.post(f"/retry/{job_id}").status_code == 400  # only FAILED / TIMED_OUT
    assert api.get("/health").json()["jobs"]["retried"] == 1


def test_purge_queue_removes_only_queued_jobs(runpod_emulator):
    emu = runpod_emulator(handler=echo, workers=1, latency_s=5.0)
    api = Api(emu)
    first = api.run({})
    until(lambda: api.get(f"/status/{first}").json()["status"] == "IN_PROGRESS")
    later = [api.run({}) for _ in range(3)]
    assert api.post("/purge-queue").json() == {"removed": 3, "status": "completed"}
    assert api.get(f"/status/{first}").json()["status"] == "IN_PROGRESS"  # running ones stay
    assert all(api.get(f"/status/{j}").status_code == 404 for j in later)
    assert emu.stats("upscale")["purged"] == 3


def test_n_workers_run_jobs_concurrently_and_no_more(runpod_emulator):
    # all six wait before the workers come (on a loaded machine six /run calls one by one
    # could each take longer than a job, and never three would run at once)
    emu = runpod_emulator(handler=echo, workers=0, latency_s=0.4)
    api = Api(emu)
    ids = [api.run({"i": i}) for i in range(6)]
    emu.scale("upscale", 3)
    bodies = [api.wait(job_id) for job_id in ids]
    assert len({b["workerId"] for b in bodies}) == 3
    stats = emu.stats("upscale")
    assert stats["max_running"] == 3 and stats["by_status"] == {"COMPLETED": 6}


def test_async_handlers_are_awaited(runpod_emulator):
    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"id": job["id"]}

    emu = runpod_emulator(handler=handler)
    api = Api(emu)
    job_id = api.run({})
    assert api.wait(job_id)["output"] == {"id": job_id}


def test_request_keys_are_counted_per_submission(runpod_emulator):
    emu = runpod_emulator(handler=echo)
    api = Api(emu)
    for key in ("a", "b", "a"):
        api.run({"request_key": key})
    assert emu.stats("upscale")["request_keys"] == {"a": 2, "b": 1}


def test_injected_http_faults_and_retry_after(runpod_emulator):
    emu = runpod_emulator(handler=echo, faults=Faults.parse("429=1:1,5xx=1:1", retry_after_s=2))
    api = Api(emu)
    first = api.post("/run", {"input": {}})
    assert first.status_code == 429 and first.headers["retry-after"] == "2"
    assert api.post("/run", {"input": {}}).status_code in (500, 502, 503)
    assert api.post("/run", {"input": {}}).status_code == 200
    stats = emu.stats("upscale")
    assert stats["submitted"] == 1 and stats["faults"] == {"429": 1, "5xx": 1}


def test_fault_specs_are_validated():
    assert Faults.parse("failed=0.5:3").specs["failed"].limit == 3
    for bad in ("bogus=0.1", "failed", "failed=2", "failed=x"):
        with pytest.raises(ValueError):
            Faults.parse(bad)


def test_several_endpoints_share_one_server():
    calls: list[str] = []

    def named(name: str) -> Any:
        def handler(job: dict[str, Any]) -> dict[str, str]:
            calls.append(name)
            return {"from": name}

        return handler

    configs = {"a": EndpointConfig(handler=named("a")), "b": EndpointConfig(handler=named("b"))}
    with EmulatorServer(configs) as emu:
        assert Api(emu, "a").wait(Api(emu, "a").run({}))["output"] == {"from": "a"}
        assert Api(emu, "b").wait(Api(emu, "b").run({}))["output"] == {"from": "b"}
        assert httpx.get(f"{emu.root}/_emulator/stats").json().keys() == {"a", "b"}
    assert calls == ["a", "b"]


def test_aat_emulate_serves_the_echo_worker_on_loopback(tmp_path):
    port = free_port()
    log = tmp_path / "emulate.log"
    with ServiceProcess(aat_command("emulate", "--port", str(port), "--workers", "2",
                                    "--faults", "failed=0"),
                        env={"RUNPOD_API_KEY": "cli-key"}, scrub=False, log=log,
                        ready_url=f"http://127.0.0.1:{port}/_emulator/stats", timeout=15,
                        poll_s=0.05, stop_timeout=10):
        url = f"http://127.0.0.1:{port}/v2"
        headers = {"authorization": "Bearer cli-key"}
        health = httpx.get(f"{url}/upscale/health", headers=headers)
        assert health.json()["workers"] == {"idle": 2, "running": 0}
        resp = httpx.post(f"{url}/caption/runsync", headers=headers,
                          json={"input": {"action": "health"}})
        assert resp.json()["output"]["worker"] == "echo"
    out = log.read_text()
    assert f"AAT_RUNPOD_BASE_URL={url}" in out and "cli-key" not in out


def test_aat_emulate_prints_a_setting_for_every_endpoint_it_serves() -> None:
    """What a user exports to point the service at the emulator: the animate stand-ins too."""
    from service.cli.emulate import emulate, service_env
    from workers.emulator import HANDLER_MODULES

    table = [
        ({"upscale": "echo", "caption": "echo"},
         [("RUNPOD_UPSCALE_ENDPOINT_ID", "upscale"), ("RUNPOD_CAPTION_ENDPOINT_ID", "caption")]),
        ({"gpu": "echo"},
         [("RUNPOD_UPSCALE_ENDPOINT_ID", "gpu"), ("RUNPOD_CAPTION_ENDPOINT_ID", "gpu")]),
        ({"anim": "animate-echo", "qwen-image-edit": "qwen-edit-echo"},
         [("RUNPOD_ANIMATE_ENDPOINT_ID", "anim"), ("AAT_RUNPOD_EDIT_PUBLIC_SLUG",
                                                   "qwen-image-edit")]),
        ({"a": "animate", "up": "upscale"},
         [("RUNPOD_UPSCALE_ENDPOINT_ID", "up"), ("RUNPOD_ANIMATE_ENDPOINT_ID", "a")]),
    ]
    for mounts, env in table:
        assert service_env(mounts) == env, mounts
    helptext = emulate.__defaults__[0].help  # type: ignore[index]  # the --worker option
    assert all(name in helptext for name in HANDLER_MODULES), helptext


def test_aat_emulate_rejects_an_unknown_worker():
    out = subprocess.run([sys.executable, "-m", "service.cli", "emulate", "--worker", "x=gpu9"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown worker 'gpu9'" in out.stderr


def test_slow_fault_multiplies_the_latency(runpod_emulator):
    emu = runpod_emulator(handler=echo, latency_s=0.1,
                          faults=Faults.parse("slow=1:1", slow_factor=5))
    api = Api(emu)
    slow, normal = api.wait(api.run({})), api.wait(api.run({}))
    assert slow["executionTime"] >= 500 > normal["executionTime"]
    assert emu.stats("upscale")["faults"] == {"slow": 1}


def test_rate_limits_answer_429_with_retry_after(runpod_emulator):
    # a 4 s window: the six requests below fit in it even on a loaded machine
    emu = runpod_emulator(handler=echo, rate_limits={"run": 3}, rate_window_s=4.0)
    api = Api(emu)
    codes = [api.post("/run", {"input": {}}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = api.post("/run", {"input": {}})
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 4  # whole seconds until a slot frees
    assert api.get("/health").status_code == 200  # other routes keep their own budget
    until(lambda: api.post("/run", {"input": {}}).status_code == 200, timeout=8)
    assert emu.stats("upscale")["submitted"] == 4


# ---- image references (workers/common/imageref.py, used by the echo worker and the backend) --


def test_image_refs_round_trip_losslessly_inline_and_by_url(tmp_path):
    import base64
    import functools
    import http.server
    import threading

    import numpy as np

    from workers.common.imageref import decode_to_array, encode_image_ref

    pixels = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for fmt in ("png", "webp"):
        assert np.array_equal(decode_to_array(encode_image_ref(pixels, fmt)), pixels)
    ref = encode_image_ref(pixels)
    (tmp_path / "tile.png").write_bytes(base64.b64decode(ref.b64 or ""))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/tile.png"
        assert np.array_equal(decode_to_array({"url": url}), pixels)
    finally:
        server.shutdown()


@pytest.mark.parametrize(("ref", "code"), [
    ({"b64": "not base64!"}, "image_corrupt"),
    ({"b64": "aGVsbG8="}, "image_corrupt"),  # "hello": not an image
    ({"b64": ""}, "image_empty"),
    ({"b64": "x", "url": "http://a/b.png"}, "image_corrupt"),  # both given
    ({"url": "http://127.0.0.1:9/missing.png"}, "image_corrupt"),  # unreachable
])
def test_bad_image_refs_are_image_errors(ref, code):
    from service.core.errors import ImageError
    from workers.common.imageref import decode_image_ref

    with pytest.raises(ImageError) as info:
        decode_image_ref(ref)
    assert info.value.code == code and info.value.message


def test_a_decompression_bomb_is_refused_before_decoding():
    import base64
    import io

    from PIL import Image

    from service.core.errors import ImageError
    from workers.common.imageref import decode_image_ref

    buf = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buf, format="PNG")  # 36 MP of zeros: a tiny file
    with pytest.raises(ImageError) as info:
        decode_image_ref({"b64": base64.b64encode(buf.getvalue()).decode()})
    assert info.value.code == "image_too_large"


def test_an_endpoint_at_zero_workers_queues_until_scaled(runpod_emulator):
    emu = runpod_emulator(handler=echo, workers=0)
    api = Api(emu)
    job_id = api.run({"cold": True})
    assert api.get("/health").json()["workers"] == {"idle": 0, "running": 0}
    assert api.get(f"/status/{job_id}").json()["status"] == "IN_QUEUE"
    scaled = httpx.post(f"{emu.root}/_emulator/scale/upscale", params={"workers": 2})
    assert scaled.json()["workers"]["idle"] + scaled.json()["workers"]["running"] == 2
    assert api.wait(job_id)["output"] == {"seen": {"cold": True}}
    httpx.post(f"{emu.root}/_emulator/scale/upscale", params={"workers": 1})
    assert api.get("/health").json()["workers"] == {"idle": 1, "running": 0}
