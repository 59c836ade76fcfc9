"""The public API the studio stands on, over real HTTP against `aat up` on the emulator:
tile planning and the estimate, WebP previews (whole, region, never enlarged, cached), tile
states in the tile list and the SSE stream, the original input."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from service.core.tiling import plan_tiles

SMALL = {"tile_size": 64, "overlap": 16}


def _png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _smooth(width: int, height: int) -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.dstack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _finished(http, data: bytes, **params) -> dict:
    job = http.post("/v1/jobs", content=data, params={**SMALL, **params},
                    headers={"Content-Type": "image/png"}).json()
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        for _ in stream.iter_lines():
            pass
    return dict(http.get(f"/v1/jobs/{job['id']}").json())


def test_plan_draws_the_runner_s_tiles_and_prices_them(studio) -> None:
    with studio.client() as http:
        first = http.post("/v1/plan", json={"input_width": 100, "input_height": 70,
                                            "params": {**SMALL, "scale": 3}})
        assert first.status_code == 200, first.text
        plan = first.json()
        expected = plan_tiles(300, 210, 64, 16)
        assert (plan["width"], plan["height"]) == (300, 210)
        assert [(t["x"], t["y"], t["w"], t["h"]) for t in plan["tiles"]] == \
            [(t.x, t.y, t.w, t.h) for t in expected.tiles]
        est = plan["estimate"]
        assert est["tiles"] == len(expected.tiles)
        assert est["usd"] == round(est["gpu_seconds"] * est["price_per_gpu_second"], 4)
        seam = http.post("/v1/plan", json={"input_width": 100, "input_height": 70,
                                           "params": {**SMALL, "scale": 3, "seam_fix": "band"}})
        assert seam.json()["estimate"]["tiles"] > est["tiles"], "seam-fix tiles are counted"
        bad = http.post("/v1/plan", json={"input_width": 100, "input_height": 70,
                                          "params": {"tile_size": 64, "overlap": 64}})
        assert bad.status_code == 422 and "overlap" in bad.text
        huge = http.post("/v1/plan", json={"input_width": 9000, "input_height": 10,
                                           "params": {"scale": 4}})
        assert huge.status_code == 422 and huge.json()["code"] == "output_too_large"
        _finished(http, _png(64, 48, seed=11))
        measured = http.post("/v1/plan", json={"input_width": 100, "input_height": 70,
                                               "params": SMALL}).json()["estimate"]
        assert measured["seconds_per_tile_source"] == "recent_jobs"
        assert measured["seconds_per_tile"] > 0


def test_previews_are_small_webp_regions_never_enlarged(studio) -> None:
    with studio.client() as http:
        job = _finished(http, _smooth(200, 120))
        assert job["status"] == "succeeded"
        base = f"/v1/jobs/{job['id']}/preview"
        whole = http.get(f"{base}/output", params={"max": 100})
        assert whole.status_code == 200 and whole.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(whole.content)).size == (100, 60)
        full = http.get(f"{base}/output", params={"max": 4096})
        assert Image.open(io.BytesIO(full.content)).size == (400, 240), "never enlarged"
        box = {"x": 64, "y": 32, "w": 128, "h": 96}
        after = Image.open(io.BytesIO(http.get(f"{base}/output", params=box).content))
        before = Image.open(io.BytesIO(http.get(f"{base}/input", params=box).content))
        assert after.size == (128, 96) and before.size == (64, 48), "input box = output / 2"
        result = Image.open(io.BytesIO(http.get(f"/v1/jobs/{job['id']}/result").content))
        crop = np.asarray(result.convert("RGB").crop((64, 32, 192, 128))).astype(int)
        assert np.abs(np.asarray(after.convert("RGB")).astype(int) - crop).mean() < 6
        assert http.get(f"{base}/output", params={"x": 1}).json()["code"] == "invalid_params"
        outside = http.get(f"{base}/output", params={"x": 390, "y": 0, "w": 20, "h": 5})
        assert outside.status_code == 422 and "outside" in outside.json()["detail"]
        assert http.get(f"{base}/thumbnail").status_code == 422
        original = http.get(f"/v1/jobs/{job['id']}/input")
        assert original.content == _smooth(200, 120)
    cached = list((studio.data_dir / "previews").rglob("*.webp"))
    assert len(cached) >= 4


def test_tile_states_in_the_list_and_the_event_stream(studio) -> None:
    with studio.client() as http:
        job = http.post("/v1/jobs", content=_png(96, 64, seed=13), params=SMALL,
                        headers={"Content-Type": "image/png"}).json()
        seen: dict[int, list[str]] = {}
        event = None
        with http.stream("GET", f"/v1/jobs/{job['id']}/events", params={"tiles": "true"}) as s:
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "tiles":
                    for t in json.loads(line[6:])["tiles"]:
                        seen.setdefault(t["index"], []).append(t["state"])
        listed = http.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
    assert seen and sorted(seen) == [t["index"] for t in listed]
    assert all(states[-1] == "done" for states in seen.values()), seen
    assert any({"captioning", "refining"} & set(states) for states in seen.values())
    for states in seen.values():
        assert len(states) == len(set(states)), "a state is sent once per change"
    assert {t["state"] for t in listed} == {"done"}
    assert all(isinstance(t["seed"], int) for t in listed)
    for t in listed:  # each tile's own timings: wall time covers the GPU time it was billed
        tm = t["timings"]
        assert set(tm) == {"caption", "caption_gpu", "refine", "refine_gpu"}, tm
        assert tm["refine"] >= tm["refine_gpu"] > 0 and tm["caption"] >= tm["caption_gpu"] > 0


def test_plain_event_streams_carry_only_job_frames(studio) -> None:
    """Clients that read every frame as a job (CLI, watcher, plugins) are unaffected."""
    with studio.client() as http:
        job = http.post("/v1/jobs", content=_png(64, 64, seed=14), params=SMALL,
                        headers={"Content-Type": "image/png"}).json()
        with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            names = [line[7:] for line in stream.iter_lines() if line.startswith("event: ")]
    assert set(names) == {"progress", "end"}




def test_plan_follows_spritesheet_cells_and_non_diffusing_types(studio) -> None:
    with studio.client() as http:
        sheet = http.post("/v1/plan", json={"input_width": 128, "input_height": 64, "params": {
            **SMALL, "scale": 2, "sheet": "2x1", "asset_type": "sprite"}}).json()
        whole = http.post("/v1/plan", json={"input_width": 128, "input_height": 64,
                                            "params": {**SMALL, "scale": 2}}).json()
        normal = http.post("/v1/plan", json={"input_width": 128, "input_height": 64, "params": {
            **SMALL, "asset_type": "normal"}}).json()
    cell_w = 128  # two 64 px cells at scale 2
    for t in sheet["tiles"]:
        assert t["x"] // cell_w == (t["x"] + t["w"] - 1) // cell_w, f"tile crosses a cell: {t}"
    assert len(sheet["tiles"]) != len(whole["tiles"])
    assert normal["estimate"]["tiles"] == 0 and normal["estimate"]["usd"] == 0
    assert normal["estimate"]["seconds_per_tile_source"] == "no_gpu"


def test_style_images_are_stored_by_hash_and_checked(studio) -> None:
    data = _png(32, 32, seed=21)
    with studio.client() as http:
        stored = http.post("/v1/styles", content=data, headers={"Content-Type": "image/png"})
        assert stored.status_code == 201
        sha = stored.json()["sha256"]
        job = http.post("/v1/jobs", content=_png(64, 64, seed=22), headers={
            "Content-Type": "image/png"}, params={**SMALL, "style_image_sha256": sha,
                                                  "ip_adapter_scale": 0.4})
        assert job.status_code == 202, job.text
        bad = http.post("/v1/styles", content=b"GIF89a broken", headers={
            "Content-Type": "image/gif"})
        assert bad.status_code == 422 and bad.json()["code"].startswith("image_")
    import hashlib

    assert sha == hashlib.sha256(data).hexdigest()


def _lora(values: int) -> bytes:
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [values],
                               "data_offsets": [0, 4 * values]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(256)) * (values // 64)


def test_chunked_lora_upload_refuses_gaps_ignores_resends_and_checks_the_file(studio) -> None:
    data = _lora(64 * 1024)  # 256 KiB of tensor data
    half = len(data) // 2
    with studio.client() as http:
        start = http.post("/v1/models/uploads", json={"filename": "stone.safetensors",
                                                      "size": len(data)})
        assert start.status_code == 201, start.text
        up = start.json()["id"]
        put = f"/v1/models/uploads/{up}"
        assert http.put(put, params={"offset": 0}, content=data[:half]).json()["received"] == half
        again = http.put(put, params={"offset": 0}, content=data[:half])
        assert again.json()["received"] == half, "a resent chunk is not written twice"
        gap = http.put(put, params={"offset": half + 10}, content=data[half + 10:])
        assert gap.status_code == 409 and gap.json()["code"] == "upload_offset"
        early = http.post(f"{put}/finish")
        assert early.status_code == 409 and early.json()["code"] == "upload_incomplete"
        http.put(put, params={"offset": half}, content=data[half:])
        done = http.post(f"{put}/finish")
        assert done.status_code == 201, done.text
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert listed["stone.safetensors"]["size_bytes"] == len(data)
        assert http.post(f"{put}/finish").status_code == 404, "an upload finishes once"

        fake = b"\x80\x04 not safetensors at all" * 4
        bad = http.post("/v1/models/uploads", json={"filename": "evil.safetensors",
                                                    "size": len(fake)}).json()["id"]
        http.put(f"/v1/models/uploads/{bad}", params={"offset": 0}, content=fake)
        refused = http.post(f"/v1/models/uploads/{bad}/finish")
        assert refused.status_code == 422 and refused.json()["code"] == "model_invalid"
        assert "evil.safetensors" not in {m["name"] for m in http.get("/v1/models").json()[
            "models"]}
        name = http.post("/v1/models/uploads", json={"filename": "x.ckpt", "size": 100})
        assert name.status_code == 422
        huge = http.post("/v1/models/uploads", json={"filename": "big.safetensors",
                                                     "size": 2**40})
        assert huge.status_code == 413
    assert not list((studio.data_dir / "uploads").glob(f"{bad}.*")), "refused files removed"


def test_every_job_option_has_a_plain_label_and_an_explanation() -> None:
    """A parameter added to the API shows on the form by itself; it must not show as its
    field name ("Ip adapter mode") or without a word on what it does."""
    from service.studio.form import LABELS, form_fields

    fields = form_fields()
    missing = [f.name for f in fields if f.name not in LABELS]
    assert not missing, f"add a plain-word label to service/studio/form.py LABELS: {missing}"
    unexplained = [f.name for f in fields if not f.hint and f.kind in ("select", "tristate")]
    assert not unexplained, f"choices without a hint (LABELS or a Field description): " \
        f"{unexplained}"
    by_name = {f.name: f for f in fields}
    assert by_name["quality"].label == "Quality" and "few-step" in by_name["quality"].hint
    assert "clip skip 2" in by_name["clip_skip"].hint


def test_every_animate_option_has_a_plain_label_and_the_motions_are_choices() -> None:
    """The Animate form is generated like the new-job form: every AnimateParams field with a
    plain label and its default; the motion offers the presets and custom."""
    from service.core.animate import MOTIONS
    from service.studio.form import ANIMATE_LABELS, animate_fields

    fields = {f.name: f for f in animate_fields()}
    missing = [name for name in fields if name not in ANIMATE_LABELS]
    assert not missing, f"add a plain-word label to ANIMATE_LABELS: {missing}"
    assert fields["motion"].kind == "select" and fields["motion"].default == "walk"
    assert fields["motion"].choices == [*MOTIONS, "custom"]
    assert (fields["frames"].minimum, fields["frames"].maximum) == (2, 16)
    assert fields["facing"].choices == ["right", "left", "front", "back"]
    assert fields["loop"].kind == "tristate"
