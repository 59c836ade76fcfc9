"""The animate worker with tiny random Qwen-Image-Edit components on the CPU: diffusers' real
``QwenImageEditPipeline`` code path (no download), behind the real handler in the RunPod
emulator, reached through the service's edit backend; a frame comes back at the canvas size,
and the same seed gives the same pixels."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from service.backends.edit import WorkerEditBackend
from service.backends.runpod.client import PollPolicy, RunPodClient
from workers.emulator import EmulatorServer, EndpointConfig

pytestmark = pytest.mark.slow


def canvas() -> np.ndarray:
    out = np.zeros((48, 32, 3), np.uint8)
    out[:] = (0, 255, 0)
    out[10:40, 8:24] = (200, 80, 40)
    return out


def test_tiny_worker_edits_one_frame_through_the_emulator(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("AAT_WORKER_TINY", "1")
    from workers.animate import handler as worker
    from workers.animate.pipeline import AnimatePipeline

    with EmulatorServer({"anim": EndpointConfig(handler=worker.handler, workers=1)},
                        api_key="k") as emu:
        client = RunPodClient(emu.url, "anim", SecretStr("k"), poll=PollPolicy(0.05, 0.5, 600))
        backend = WorkerEditBackend(client, steps=1)

        async def run() -> np.ndarray:
            try:
                return await backend.edit("frame-0", canvas(), "walking, left foot forward", 7)
            finally:
                await backend.aclose()

        frame = asyncio.run(run())
        assert emu.stats("anim")["by_status"].get("COMPLETED") == 1
    assert frame.shape == (48, 32, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # the tiny model drew something (noise), not a blank

    pipe: AnimatePipeline = worker.pipeline.get()  # the same loaded pipeline, called directly
    again = pipe.edit(Image.fromarray(canvas()), "walking, left foot forward", seed=7, steps=1,
                      true_cfg_scale=4.0)
    buf = io.BytesIO()
    again.save(buf, format="PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), frame)
