"""The two image-edit backends of the animate job against the RunPod emulator on loopback:
what each frame cost is accounted (GPU seconds x price for our worker, the price RunPod's
public endpoint reports per image), and a frame that is cancelled cancels its RunPod job."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from image_factory import bomb_png
from pydantic import SecretStr

from service.backends.base import CallAccounting
from service.backends.edit import PublicEditBackend, WorkerEditBackend
from service.backends.runpod.client import PollPolicy, RunPodClient
from service.core.errors import WorkerError
from workers.emulator import EmulatorServer, EndpointConfig, resolve_handler
from workers.emulator.files import SHELF

KEY = "emu-key"
PRICE = 0.001  # USD per GPU second


def canvas() -> np.ndarray:
    out = np.zeros((48, 32, 3), np.uint8)
    out[:] = (0, 255, 0)
    out[10:40, 8:24] = (200, 80, 40)
    return out


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer({
        "anim": EndpointConfig(handler=resolve_handler("animate-echo"), workers=2,
                               latency_s=0.2),
        "qwen-image-edit": EndpointConfig(handler=resolve_handler("qwen-edit-echo"),
                                          workers=2),
        "anim-stuck": EndpointConfig(handler=resolve_handler("animate-echo"), workers=1,
                                     latency_s=30),
    }, api_key=KEY) as server:
        yield server


def _client(emu: EmulatorServer, endpoint: str) -> RunPodClient:
    return RunPodClient(emu.url, endpoint, SecretStr(KEY), poll=PollPolicy(0.02, 0.2, 60))


def test_our_worker_frames_cost_their_gpu_seconds(emu: EmulatorServer) -> None:
    backend = WorkerEditBackend(_client(emu, "anim"), steps=1, price_per_s=PRICE)
    acct, seen = CallAccounting(), []

    async def run() -> np.ndarray:
        try:
            return await backend.edit("frame-0", canvas(), "walking", 3, acct=acct,
                                      on_submitted=seen.append)
        finally:
            await backend.aclose()

    frame = asyncio.run(run())
    assert frame.shape == (96, 64, 3)  # the echo answers at twice the size
    assert acct.remote_job_ids == seen and len(seen) == 1 and acct.attempts == 1
    assert acct.execution_ms >= 200  # the endpoint's 0.2 s of "GPU" time
    assert acct.cost_usd == pytest.approx(acct.execution_ms / 1000 * PRICE)


def test_the_public_endpoint_frames_cost_what_it_reports(emu: EmulatorServer) -> None:
    backend = PublicEditBackend(_client(emu, "qwen-image-edit"),
                                lambda data: SHELF.put(data, ".png"), price_per_s=PRICE)
    acct = CallAccounting()

    async def run() -> np.ndarray:
        try:
            return await backend.edit("frame-1", canvas(), "running", 5, acct=acct)
        finally:
            await backend.aclose()

    assert asyncio.run(run()).shape == (96, 64, 3)
    assert acct.cost_usd == pytest.approx(0.02)  # the price in the endpoint's output
    assert len(acct.remote_job_ids) == 1


def test_a_cancelled_frame_cancels_its_runpod_job(emu: EmulatorServer) -> None:
    backend = WorkerEditBackend(_client(emu, "anim-stuck"), steps=1)
    acct = CallAccounting()

    async def run() -> None:
        task = asyncio.create_task(backend.edit("frame-2", canvas(), "jumping", 1, acct=acct))
        while not acct.remote_job_ids:  # submitted and running on the endpoint
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()

    asyncio.run(run())
    stats = emu.stats("anim-stuck")
    assert stats["canceled"] == 1 and stats["by_status"] == {"CANCELLED": 1}


def test_a_frame_submitted_earlier_is_resumed_by_its_runpod_id(emu: EmulatorServer) -> None:
    """An interrupted job's frame: its RunPod job is re-polled and read like a fresh answer
    (nothing submitted again, its cost accounted); a job RunPod no longer knows, or one
    that was cancelled, gives None, and the caller submits the frame afresh."""
    worker = WorkerEditBackend(_client(emu, "anim"), steps=1, price_per_s=PRICE)
    public = PublicEditBackend(_client(emu, "qwen-image-edit"),
                               lambda data: SHELF.put(data, ".png"), price_per_s=PRICE)
    stuck = WorkerEditBackend(_client(emu, "anim-stuck"), steps=1)

    async def run() -> None:
        try:
            for backend, endpoint in ((worker, "anim"), (public, "qwen-image-edit")):
                ids: list[str] = []
                fresh = await backend.edit("frame-4", canvas(), "walking", 7,
                                           on_submitted=ids.append)
                before = emu.stats(endpoint)["submitted"]
                acct = CallAccounting()
                again = await backend.resume("frame-4", ids[0], acct=acct)
                assert again is not None and np.array_equal(again, fresh)
                assert emu.stats(endpoint)["submitted"] == before  # re-polled, not re-sent
                assert acct.remote_job_ids == ids and acct.attempts == 1
                assert acct.cost_usd > 0
                gone = CallAccounting()
                assert await backend.resume("frame-4", "no-such-job", acct=gone) is None
                assert gone == CallAccounting()  # nothing paid, nothing counted
            task = asyncio.create_task(stuck.edit("frame-5", canvas(), "jumping", 1,
                                                  on_submitted=ids.append))
            while len(ids) < 2:
                await asyncio.sleep(0.02)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await stuck.resume("frame-5", ids[1]) is None  # CANCELLED: submit again
        finally:
            for backend in (worker, public, stuck):
                await backend.aclose()

    asyncio.run(run())


def test_a_frame_answered_as_a_decompression_bomb_is_refused_undecoded() -> None:
    """A frame whose header claims gigapixels, inline from a worker or by URL from the public
    endpoint, is a clear, retryable ``edit_bad_output``: never decoded, never a crash."""
    bomb = bomb_png(60_000)

    def worker(job: dict[str, Any]) -> dict[str, Any]:
        return {"frame_id": job["input"]["frame_id"], "seed_used": 1,
                "image": {"b64": base64.b64encode(bomb).decode()}}

    def public(_job: dict[str, Any]) -> dict[str, Any]:
        return {"image_url": SHELF.put(bomb, ".png"), "cost": 0.02}

    with EmulatorServer({"anim": EndpointConfig(handler=worker),
                         "qwen-image-edit": EndpointConfig(handler=public)},
                        api_key=KEY) as emu:
        for backend in (WorkerEditBackend(_client(emu, "anim"), steps=1),
                        PublicEditBackend(_client(emu, "qwen-image-edit"),
                                          lambda data: SHELF.put(data, ".png"))):
            async def run(backend: Any = backend) -> None:
                try:
                    await backend.edit("frame-9", canvas(), "walking", 1)
                finally:
                    await backend.aclose()

            with pytest.raises(WorkerError) as err:
                asyncio.run(run())
            assert err.value.code == "edit_bad_output" and err.value.retryable
            assert "decompression bomb" in err.value.message, err.value.message
