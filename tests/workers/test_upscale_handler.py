"""The upscale worker's RunPod handler: real handler code, tiny components (AAT_WORKER_TINY=1).

Bad requests come back as structured errors (a JSON string under ``error``), LoRA uploads are
safetensors-only and confined to the LoRA folder, and the handler runs under the runpod SDK's
own ``--test_input`` mode.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.tiny import upscale as tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("volume")
    lora_dir = base / "models" / "loras"
    mp = pytest.MonkeyPatch()
    mp.setenv("AAT_WORKER_TINY", "1")
    mp.setenv("AAT_LORA_DIR", str(lora_dir))
    from workers.upscale import handler

    handler.pipeline.reset()
    yield handler, lora_dir
    handler.pipeline.reset()
    mp.undo()


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("lora")
    unet = tiny.build_components(work)["unet"]
    return tiny.write_lora(unet, work / "x.safetensors", seed=5).read_bytes()


def png_b64(size: tuple[int, int] = (64, 48), seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def upscale_input(**extra: object) -> dict:
    return {"action": "upscale", "steps": 4, "strength": 0.5, "scheduler": "euler",
            "tiles": [{"tile_id": "0_0", "image": {"b64": png_b64()}, "seed": 3}], **extra}


def call(handler, payload: object) -> dict:
    return handler.handle({"id": "job-1", "input": payload})


def error_of(out: dict) -> dict:
    assert set(out) == {"error"} and isinstance(out["error"], str), out
    return json.loads(out["error"])


def decode(ref: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(ref["b64"]))).convert("RGB"))


def test_upscale_returns_each_tile_at_its_size_with_its_seed(worker) -> None:
    handler, _ = worker
    payload = upscale_input(batch_size=2, output_format="webp")
    payload["tiles"].append({"tile_id": "0_1", "image": {"b64": png_b64((40, 40), 1)},
                             "prompt": "brick", "seed": 9})
    out = call(handler, payload)
    assert [t["tile_id"] for t in out["tiles"]] == ["0_0", "0_1"]
    assert [t["seed_used"] for t in out["tiles"]] == [3, 9]
    assert decode(out["tiles"][0]["image"]).shape == (48, 64, 3)
    assert decode(out["tiles"][1]["image"]).shape == (40, 40, 3)


def test_lora_upload_list_use_delete(worker, lora_bytes: bytes) -> None:
    handler, lora_dir = worker
    plain = decode(call(handler, upscale_input())["tiles"][0]["image"])
    up = call(handler, {"action": "upload_model", "filename": "detail",
                        "file_b64": base64.b64encode(lora_bytes).decode(),
                        "sha256": hashlib.sha256(lora_bytes).hexdigest()})
    described = {"name": "detail.safetensors", "size_bytes": len(lora_bytes),
                 "sha256": hashlib.sha256(lora_bytes).hexdigest(), "trigger_words": []}
    assert up == {"status": "complete", "name": "detail.safetensors",
                  "size_bytes": len(lora_bytes), "model": described}
    listed = call(handler, {"action": "list_models"})["models"]
    assert listed == [described]  # the upload answers with what the list says
    with_lora = decode(call(handler, upscale_input(
        loras=[{"name": "detail", "weight": 1.0}]))["tiles"][0]["image"])
    assert np.abs(plain.astype(int) - with_lora).mean() > 1.0
    assert call(handler, {"action": "delete_model", "name": "detail.safetensors"})["status"] == "deleted"
    err = error_of(call(handler, upscale_input(loras=[{"name": "detail", "weight": 1.0}])))
    assert err["code"] == "lora_not_found" and not err["retryable"]
    assert list(lora_dir.iterdir()) == []


def test_chunked_upload_and_checksum_mismatch(worker, lora_bytes: bytes) -> None:
    handler, lora_dir = worker
    third = len(lora_bytes) // 3 + 1
    parts = [lora_bytes[i:i + third] for i in range(0, len(lora_bytes), third)]
    statuses = []
    for i, part in enumerate(parts):
        out = call(handler, {"action": "upload_model", "filename": "big.safetensors",
                             "file_b64": base64.b64encode(part).decode(),
                             "chunk_index": i, "total_chunks": len(parts)})
        statuses.append(out["status"])
    assert statuses == ["partial", "partial", "complete"]
    assert (lora_dir / "big.safetensors").read_bytes() == lora_bytes
    err = error_of(call(handler, {"action": "upload_model", "filename": "bad.safetensors",
                                  "file_b64": base64.b64encode(lora_bytes).decode(),
                                  "sha256": "0" * 64}))
    assert err["code"] == "lora_checksum"
    assert sorted(p.name for p in lora_dir.iterdir()) == [
        "big.safetensors", "big.safetensors.meta.json"]
    call(handler, {"action": "delete_model", "name": "big"})


def test_pickle_and_path_tricks_are_refused_and_nothing_is_written(worker) -> None:
    handler, lora_dir = worker
    outside = lora_dir.parent.parent
    before = sorted(str(p) for p in outside.rglob("*"))
    evil = base64.b64encode(pickle.dumps({"lora": [1, 2, 3]})).decode()
    cases = {
        "evil.safetensors": "lora_invalid",  # pickle bytes under a safetensors name
        "evil.ckpt": "path_forbidden",
        "../../x": "path_forbidden",
        "../x.safetensors": "path_forbidden",
        "/etc/passwd": "path_forbidden",
        "sub/dir.safetensors": "path_forbidden",
    }
    for name, code in cases.items():
        err = error_of(call(handler, {"action": "upload_model", "filename": name, "file_b64": evil}))
        assert err["code"] == code, name
    err = error_of(call(handler, {"action": "delete_model", "name": "../../x"}))
    assert err["code"] == "path_forbidden"
    assert sorted(str(p) for p in outside.rglob("*")) == before


@pytest.mark.parametrize(("payload", "code"), [
    ({"action": "upscale"}, "invalid_params"),  # no tiles
    ({"action": "sharpen"}, "unknown_action"),
    ("not an object", "invalid_input"),
    ({"action": "upscale", "tiles": [{"tile_id": "a", "image": {"b64": "aGVsbG8="}, "seed": 1}]},
     "image_corrupt"),
    ({"action": "upscale", "tiles": [{"tile_id": "a", "image": {"b64": "%%%"}, "seed": 1}]},
     "image_corrupt"),
    ({**upscale_input(), "control_image": "x"}, "invalid_params"),  # unknown knob: never ignored
    ({**upscale_input(), "steps": 0}, "invalid_params"),
])
def test_bad_requests_get_structured_errors(worker, payload: object, code: str) -> None:
    handler, _ = worker
    err = error_of(call(handler, payload))
    assert err["code"] == code
    assert err["retryable"] is False
    assert 10 < len(err["message"]) < 500 and "\n" not in err["message"]


def test_health_reports_a_loaded_model(worker) -> None:
    handler, _ = worker
    out = call(handler, {"action": "health"})
    assert out["status"] == "ok" and out["worker"] == "upscale" and out["model_loaded"] is True


def _sdk(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AAT_WORKER_TINY": "1", "AAT_LORA_DIR": str(tmp_path / "loras"),
           "PYTHONPATH": str(ROOT)}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    return subprocess.run([sys.executable, str(ROOT / "workers/upscale/handler.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # 7-24 s: the fast tier leaves it to CI
def test_runs_under_the_runpod_sdk_test_mode(tmp_path: Path) -> None:
    # no --test_input: the SDK reads test_input.json next to the handler (the image smoke test)
    ok = _sdk([], ROOT / "workers/upscale", tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "completed successfully" in ok.stdout + ok.stderr
    bad = _sdk(["--test_input", json.dumps({"input": {"action": "list_models", "model_type": "vae"}})],
               tmp_path, tmp_path)
    assert bad.returncode == 1
    assert "invalid_params" in bad.stdout + bad.stderr


def test_a_repeated_request_key_is_answered_without_running_the_gpu_again(worker) -> None:
    handler, _ = worker
    unet = handler.pipeline.get().pipe.unet
    calls: list[int] = []
    hook = unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = call(handler, upscale_input(request_key="k-1"))
        ran = len(calls)
        again = call(handler, upscale_input(request_key="k-1"))
        assert ran > 0 and len(calls) == ran and again == first
        call(handler, upscale_input(request_key="k-2", strength=0.75))
        assert len(calls) > ran
    finally:
        hook.remove()


def test_an_oversized_result_is_an_error_not_a_silent_loss(worker, monkeypatch) -> None:
    handler, _ = worker
    monkeypatch.setenv("AAT_MAX_OUTPUT_BYTES", "2000")  # a 64x48 noise tile is ~12 kB of PNG
    err = error_of(call(handler, upscale_input()))
    assert err["code"] == "output_too_large" and "fewer tiles" in err["message"]


def test_a_remembered_result_is_not_reused_once_its_lora_changed_on_the_volume(
        worker, lora_bytes: bytes) -> None:
    handler, lora_dir = worker
    call(handler, {"action": "upload_model", "filename": "shared",
                   "file_b64": base64.b64encode(lora_bytes).decode()})
    calls: list[int] = []
    hook = handler.pipeline.get().pipe.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    payload = upscale_input(request_key="k-lora", loras=[{"name": "shared", "weight": 1.0}])
    try:
        call(handler, payload)
        ran = len(calls)
        call(handler, payload)
        assert len(calls) == ran  # remembered
        path = lora_dir / "shared.safetensors"
        path.write_bytes(lora_bytes)  # another worker sharing the volume replaced it
        os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
        call(handler, payload)
        assert len(calls) > ran  # recomputed with the new file
    finally:
        hook.remove()
        call(handler, {"action": "delete_model", "name": "shared"})
