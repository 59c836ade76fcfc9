"""A job whose tiles cannot travel to RunPod is refused at submit (422), not after its
pre-upscale on a paid GPU; the rule lives in ``service/backends/runpod/limits.py``."""

from __future__ import annotations


def test_a_job_with_tiles_runpod_cannot_carry_is_refused_at_submit(
        live_server, runpod_emulator, runpod_settings) -> None:
    from apitest_helpers import png_bytes

    server = live_server(runpod_settings(runpod_emulator(workers=1)))
    with server.client() as http:
        resp = http.post("/v1/jobs", params={"filename": "a.png", "tile_size": 2048},
                         content=png_bytes(), headers={"Content-Type": "image/png"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["code"] == "tile_too_large"
        assert http.get("/v1/jobs").json()["items"] == []  # no job was created
        ok = http.post("/v1/jobs", params={"filename": "a.png", "tile_size": 1024},
                       content=png_bytes(), headers={"Content-Type": "image/png"})
        assert ok.status_code == 202, ok.text
