"""The one REST client (`service.client.ServiceClient`, shared by the CLI and the watcher)
against a real API on loopback: it returns the API's own view models, keeps the service's
error codes, and the API's messages read as sentences. A bad paging cursor is a 400, and a
running job asked to stop says so at once (``canceling``) instead of ``running``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apitest_helpers import png_bytes

from service.client import UNAVAILABLE, JobList, JobPublic, ServiceClient
from service.core.errors import AatError, ImageError, NotFound, PathError
from service.core.params import UpscaleParams

ROOT = Path(__file__).resolve().parents[2]


def _client(server) -> ServiceClient:  # noqa: ANN001 - LiveServer
    return ServiceClient(server.url, server.token)


def test_client_returns_view_models_and_keeps_error_codes(queued_server) -> None:
    server = queued_server()
    with _client(server) as client:
        job = client.submit(png_bytes(seed=11), "rock.png", UpscaleParams(scale=2), None,
                            idempotency_key="k-rock-1")
        assert isinstance(job, JobPublic) and job.status.value == "queued"
        assert job.input.filename == "rock.png" and job.params.scale == 2
        page = client.jobs(limit=5)
        assert isinstance(page, JobList) and [j.id for j in page.items] == [job.id]
        assert client.job(job.id).id == job.id
        with pytest.raises(NotFound) as missing:  # the service's code, rebuilt as its class
            client.job("j_000000000000000000000000")
        assert missing.value.http_status == 404 and missing.value.code == "not_found"
        with pytest.raises(ImageError) as bad:
            client.submit(b"not an image", "x.png", UpscaleParams(scale=2), None, "k-bad")
        assert bad.value.code == "image_corrupt" and bad.value.http_status == 422
        assert not bad.value.retryable
    with ServiceClient("http://127.0.0.1:9", None) as nowhere, \
            pytest.raises(AatError) as down:
        nowhere.jobs()
    assert down.value.code == UNAVAILABLE and down.value.retryable
    assert down.value.http_status == 0
    assert "cannot reach the service at http://127.0.0.1:9" in down.value.message


def test_a_bad_paging_cursor_is_a_400_not_an_empty_list(queued_server) -> None:
    server = queued_server()
    with _client(server) as client:
        first = client.submit(png_bytes(seed=1), "a.png", UpscaleParams(scale=2), None, "c-1")
        client.submit(png_bytes(seed=2), "b.png", UpscaleParams(scale=2), None, "c-2")
        page = client.jobs(limit=1)
        assert page.next_cursor is not None
        second = client.jobs(limit=1, cursor=page.next_cursor)
        assert [j.id for j in second.items] == [first.id]
    with server.client() as http:
        for bad in ("abc", "zzzz", "j_123", "../x"):
            resp = http.get("/v1/jobs", params={"cursor": bad})
            assert resp.status_code == 400, (bad, resp.text)
            body = resp.json()
            assert body["code"] == "invalid_cursor" and "next_cursor" in body["detail"]


def test_messages_do_not_repeat_a_word(queued_server, tmp_path: Path) -> None:
    server = queued_server()
    with server.client() as http:
        both = http.post("/v1/jobs", params={"filename": "a.png", "scale": "2", "width": "64"},
                         content=png_bytes(), headers={"Content-Type": "image/png"})
        assert both.status_code == 422, both.text
        detail = both.json()["detail"]
        assert detail.startswith("invalid parameters: "), detail
        assert "parameter parameter" not in detail and "Value error" not in detail
        one = http.post("/v1/jobs", params={"filename": "a.png", "scale": "99"},
                        content=png_bytes(), headers={"Content-Type": "image/png"})
        assert one.json()["detail"].startswith("invalid parameter scale: "), one.text
        body = http.post("/v1/jobs", content=b'{"path": "x.png", "params": {"scale": 2, '
                         b'"width": 64}}', headers={"Content-Type": "application/json"})
        assert body.status_code == 422
        assert body.json()["detail"].startswith("invalid field params: "), body.text
        empty = http.post("/v1/jobs", content=b"[]", headers={"Content-Type": "application/json"})
        assert "field field" not in empty.json()["detail"], empty.text
        assert empty.json()["detail"].startswith("invalid request body: "), empty.text


def test_a_running_job_asked_to_stop_shows_canceling(queued_server, tmp_path: Path) -> None:
    server = queued_server()
    with _client(server) as client:
        job = client.submit(png_bytes(seed=5), "slow.png", UpscaleParams(scale=2), None, "s-1")
        store = server.jobs.store
        assert store.claim(job.id, "runner-under-test", 60.0) is not None  # a runner took it
        assert client.job(job.id).status.value == "running"
        asked = client.cancel(job.id)
        assert asked.status.value == "running" and asked.cancel_requested
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(AAT_SERVER_URL=server.url, AAT_DATA_DIR=str(tmp_path / "cli"),
               AAT_CONFIG=str(tmp_path / "none.toml"))
    for args in (["status", job.id], ["cancel", job.id], ["jobs"]):
        out = subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        line = next(ln for ln in out.stdout.splitlines() if job.id in ln)
        assert "canceling" in line.split() and "running" not in line.split(), out.stdout


def test_client_refuses_a_lora_name_with_a_path_before_calling(queued_server) -> None:
    with _client(queued_server()) as client, pytest.raises(PathError) as refused:
        client.delete_model("../secrets.safetensors")
    assert refused.value.code == "path_forbidden" and refused.value.http_status == 400


def test_aat_retry_makes_a_new_job_through_the_client(queued_server, tmp_path: Path) -> None:
    server = queued_server()
    with _client(server) as client:
        job = client.submit(png_bytes(seed=9), "moss.png", UpscaleParams(scale=2), None, "m-1")
        with pytest.raises(AatError) as early:  # still queued: nothing to retry yet
            client.retry(job.id)
        assert early.value.code == "not_ready" and early.value.http_status == 409
        client.cancel(job.id)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_"))}
    env.update(AAT_SERVER_URL=server.url, AAT_DATA_DIR=str(tmp_path / "cli"),
               AAT_CONFIG=str(tmp_path / "none.toml"))
    out = subprocess.run([sys.executable, "-m", "service.cli", "retry", job.id], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.strip()
    assert new_id != job.id and f"retried as: {new_id}" in out.stderr
    with _client(server) as client:
        new = client.job(new_id)
        assert new.input.sha256 == job.input.sha256 and new.params.scale == 2
        again, created = client.retry(job.id)  # the first retry has not failed: that job
        assert again.id == new_id and not created
