"""The job routes over real HTTP: uvicorn on loopback, a real `aat runner` (Celery) process on
the real Redis, the job store on real PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from apitest_helpers import png_bytes, sse_events, wait_terminal
from image_factory import bomb_png
from PIL import Image

SMALL = {"scale": "2", "tile_size": "64", "overlap": "16"}


@pytest.mark.slow  # a real Celery runner process (module fixture)
def test_submit_follow_progress_and_fetch_result(celery_server) -> None:
    server = celery_server
    with server.client() as http:
        resp = http.post("/v1/jobs", params={"filename": "rock.png", **SMALL},
                         content=png_bytes(96, 64), headers={"Content-Type": "image/png"})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["input"] == {**job["input"], "filename": "rock.png", "width": 96, "height": 64}
        assert job["urls"]["events"] == f"/v1/jobs/{job['id']}/events"

        events = sse_events(http, job["id"])
        names = [n for n, _ in events]
        assert names[-1] == "end" and "progress" in names
        progress = [e["progress"] for n, e in events if n == "progress"]
        assert progress == sorted(progress), "progress never goes backwards"
        assert events[-1][1]["status"] == "succeeded"
        assert len({e["stage"] for _, e in events}) >= 2, "stages are reported as they pass"

        result = http.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 200
        assert result.headers["content-type"] == "image/png"
        assert 'filename="rock_x2.png"' in result.headers["content-disposition"]
        assert Image.open(io.BytesIO(result.content)).size == (192, 128)

        got = http.get(f"/v1/jobs/{job['id']}")
        assert got.status_code == 200 and "retry-after" not in got.headers
        resumed = sse_events(http, job["id"], last_id="1")
        assert [n for n, _ in resumed] == ["progress", "end"], "a finished job ends at once"
        assert got.json()["output"]["width"] == 192


def test_duplicates_return_the_existing_job(queued_server) -> None:
    server = queued_server()
    image = png_bytes(40, 40, seed=1)
    with server.client() as http:
        first = http.post("/v1/jobs", params=SMALL, content=image,
                          headers={"Content-Type": "image/png"})
        again = http.post("/v1/jobs", params=SMALL, content=image,
                          headers={"Content-Type": "image/png"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]

        keyed = http.post("/v1/jobs", params=SMALL, content=png_bytes(40, 40, seed=2),
                          headers={"Content-Type": "image/png", "Idempotency-Key": "k-1"})
        retry = http.post("/v1/jobs", params=SMALL, content=png_bytes(40, 40, seed=2),
                          headers={"Content-Type": "image/png", "Idempotency-Key": "k-1"})
        assert (keyed.status_code, retry.status_code) == (202, 200)
        assert retry.json()["id"] == keyed.json()["id"] != first.json()["id"]
        reused = http.post("/v1/jobs", params=SMALL, content=png_bytes(40, 40, seed=5),
                           headers={"Content-Type": "image/png", "Idempotency-Key": "k-1"})
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"
        page = http.get("/v1/jobs").json()
        assert len(page["items"]) == 2


@pytest.mark.slow  # a real Celery runner process (module fixture)
def test_multipart_and_path_forms(celery_server) -> None:
    server = celery_server
    inbox = server.settings.intake_roots[0]
    (inbox / "tree.png").write_bytes(png_bytes(32, 32, seed=3, alpha=True))
    with server.client() as http:
        multi = http.post("/v1/jobs", files={"file": ("leaf.png", png_bytes(32, 48, seed=4),
                                                      "image/png")},
                          data={"params": json.dumps({"scale": 2, "tile_size": 64,
                                                      "overlap": 8})})
        assert multi.status_code == 202, multi.text
        assert multi.json()["input"]["filename"] == "leaf.png"
        by_path = http.post("/v1/jobs", json={"path": str(inbox / "tree.png"),
                                              "params": {"scale": 1.5, "tile_size": 64,
                                                         "overlap": 8}})
        assert by_path.status_code == 202, by_path.text
        assert by_path.json()["input"]["filename"] == "tree.png"
        for job in (multi.json(), by_path.json()):
            assert wait_terminal(http, job["id"])["status"] == "succeeded"
        out = Image.open(io.BytesIO(http.get(f"/v1/jobs/{by_path.json()['id']}/result").content))
        assert out.size == (48, 48) and out.mode == "RGBA", "alpha survives the path form"


@pytest.mark.slow  # a real Celery runner process (module fixture)
def test_raw_submission_with_a_target_delivers_into_the_repo(celery_server) -> None:
    repo = celery_server.settings.repos["game"]
    (repo / "textures").mkdir(exist_ok=True)
    query = {"filename": "rock.png", **SMALL, "target_repo": "game",
             "target_path": "textures/rock.png", "naming": "suffix"}
    with celery_server.client() as http:
        resp = http.post("/v1/jobs", params=query, content=png_bytes(40, 40, seed=11),
                         headers={"Content-Type": "image/png"})
        assert resp.status_code == 202, resp.text
        assert resp.json()["target"] == {"repo": "game", "path": "textures/rock.png",
                                         "naming": "suffix", "mirror_dir": None,
                                         "overwrite": False}
        done = wait_terminal(http, resp.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["output"]["delivered_path"].endswith("textures/rock_x2.png")
        result = http.get(f"/v1/jobs/{done['id']}/result").content
        unknown = http.post("/v1/jobs", params={**query, "target_repo": "nope"},
                            content=png_bytes(40, 40, seed=12),
                            headers={"Content-Type": "image/png"})
        assert (unknown.status_code, unknown.json()["code"]) == (400, "path_not_found")
        assert "AAT_REPOS" in unknown.json()["detail"]
        escape = http.post("/v1/jobs", params={**query, "target_path": "../../etc/rock.png"},
                           content=png_bytes(40, 40, seed=13),
                           headers={"Content-Type": "image/png"})
        assert escape.status_code == 400, escape.text
    assert (repo / "textures" / "rock_x2.png").read_bytes() == result


def _nothing_stored(server) -> None:
    artifacts = server.settings.data_dir / "artifacts"
    stored = [p for p in artifacts.rglob("*") if p.is_file()] if artifacts.exists() else []
    assert stored == []
    with server.client() as http:
        assert http.get("/v1/jobs").json()["items"] == []


def test_bad_input_is_refused_and_nothing_is_stored(queued_server, tmp_path: Path) -> None:
    server = queued_server()
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(8, 8))
    inbox = server.settings.intake_roots[0]
    (inbox / "link.png").symlink_to(outside)
    (inbox / "huge.png").write_bytes(png_bytes(8, 8) + b"\0" * 300_000)
    raw = {"Content-Type": "image/png"}
    with server.client() as http:
        cases = [
            (http.post("/v1/jobs", content=bomb_png(), headers=raw), 422, "image_bomb"),
            (http.post("/v1/jobs", content=b"not an image", headers=raw), 422, "image_corrupt"),
            (http.post("/v1/jobs", content=b"x" * 300_000, headers=raw), 413,
             "payload_too_large"),
            (http.post("/v1/jobs", content=iter([b"x" * 100_000] * 3), headers=raw), 413,
             "payload_too_large"),  # chunked: no Content-Length, stopped while streaming
            (http.post("/v1/jobs", params={"scale": "99"}, content=png_bytes(), headers=raw),
             422, "invalid_params"),
            (http.post("/v1/jobs", params={"sharpness": "1"}, content=png_bytes(), headers=raw),
             422, "invalid_params"),
            (http.post("/v1/jobs", json={"path": str(outside)}), 400, "path_escape"),
            (http.post("/v1/jobs", json={"path": str(inbox / ".." / "secret.png")}), 400,
             "path_escape"),
            (http.post("/v1/jobs", json={"path": str(inbox / "link.png")}), 400, "path_escape"),
            (http.post("/v1/jobs", json={"path": "relative.png"}), 400, "path_forbidden"),
            (http.post("/v1/jobs", json={"path": str(inbox / "none.png")}), 400,
             "path_not_found"),
            (http.post("/v1/jobs", json={"path": str(inbox / ("a" * 300 + ".png"))}), 400,
             "path_not_found"),  # a name longer than the disk allows (was a 500)
            (http.post("/v1/jobs", params={"target_repo": "game", "target_path": "a\x00.png"},
                       content=png_bytes(), headers=raw), 400, "path_forbidden"),
            (http.post("/v1/jobs", json={"path": str(inbox / "huge.png")}), 413,
             "payload_too_large"),
            (http.post("/v1/jobs", content=b"{}", headers={"Content-Type": "text/plain"}), 415,
             "unsupported_media_type"),
            (http.post("/v1/jobs", files={"nofile": ("a.txt", b"x")}), 422, "invalid_params"),
        ]
        for resp, status, code in cases:
            assert resp.status_code == status, (code, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            body = resp.json()
            assert body["code"] == code and body["status"] == status
            assert body["detail"] and "\n" not in body["detail"]
    _nothing_stored(server)


def test_cancel_list_filter_and_not_ready(queued_server) -> None:
    server = queued_server()  # no runner: jobs stay queued
    with server.client() as http:
        ids = [http.post("/v1/jobs", params=SMALL, content=png_bytes(16, 16, seed=s),
                         headers={"Content-Type": "image/png"}).json()["id"] for s in range(3)]
        queued = http.get(f"/v1/jobs/{ids[0]}")
        assert queued.headers["retry-after"] == "1"
        not_ready = http.get(f"/v1/jobs/{ids[0]}/result")
        assert (not_ready.status_code, not_ready.json()["code"]) == (409, "not_ready")

        canceled = http.post(f"/v1/jobs/{ids[0]}/cancel")
        assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
        again = http.post(f"/v1/jobs/{ids[0]}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "canceled"

        only = http.get("/v1/jobs", params={"status": "canceled"}).json()
        assert [j["id"] for j in only["items"]] == [ids[0]]
        first = http.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["items"]] == [ids[2], ids[1]]
        second = http.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [j["id"] for j in second["items"]] == [ids[0]] and second["next_cursor"] is None

        missing = http.get("/v1/jobs/j_nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        no_stream = http.get("/v1/jobs/j_nope/events")
        assert (no_stream.status_code, no_stream.json()["code"]) == (404, "not_found")
        assert http.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


def test_retry_makes_a_new_job_from_the_stored_input(queued_server, tmp_path: Path) -> None:
    repo = tmp_path / "game"
    (repo / "art").mkdir(parents=True)
    server = queued_server(repos={"game": repo})  # no runner: jobs stay queued
    target = {"target_repo": "game", "target_path": "art/rock.png"}
    with server.client() as http:
        job = http.post("/v1/jobs", params={"filename": "rock.png", **SMALL, **target},
                        content=png_bytes(24, 24, seed=4),
                        headers={"Content-Type": "image/png"}).json()
        busy = http.post(f"/v1/jobs/{job['id']}/retry")
        assert (busy.status_code, busy.json()["code"]) == (409, "not_ready")
        http.post(f"/v1/jobs/{job['id']}/cancel")

        retried = http.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202, retried.text
        new = retried.json()
        assert new["id"] != job["id"] and new["status"] == "queued"
        assert retried.headers["location"] == f"/v1/jobs/{new['id']}"
        assert new["kind"] == "upscale" and new["input"] == job["input"]
        assert new["params"] == job["params"] and new["target"] == job["target"]
        assert new["params"]["asset_reason"].startswith("content:")  # decided then, not "user"
        assert (job["retry_of"], new["retry_of"], new["rerun_of"]) == (None, job["id"], None)
        assert http.get(f"/v1/jobs/{new['id']}").json()["retry_of"] == job["id"]
        stored = http.get(f"/v1/jobs/{new['id']}/input").content
        assert stored == png_bytes(24, 24, seed=4)  # the same bytes, sent by nobody again

        again = http.post(f"/v1/jobs/{job['id']}/retry")  # the first retry is still queued
        assert again.status_code == 200 and again.json()["id"] == new["id"]
        http.post(f"/v1/jobs/{new['id']}/cancel")
        keyed = http.post(f"/v1/jobs/{job['id']}/retry", headers={"Idempotency-Key": "r-1"})
        same = http.post(f"/v1/jobs/{job['id']}/retry", headers={"Idempotency-Key": "r-1"})
        assert (keyed.status_code, same.status_code) == (202, 200)
        assert same.json()["id"] == keyed.json()["id"] not in (job["id"], new["id"])
        assert keyed.json()["retry_of"] == job["id"]
        missing = http.post("/v1/jobs/j_nope/retry")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@pytest.mark.slow  # a real Celery runner process (module fixture)
def test_tiles_prompt_edit_and_rerun(celery_server) -> None:
    server = celery_server
    with server.client() as http:
        job = http.post("/v1/jobs", params=SMALL, content=png_bytes(64, 64, seed=7),
                        headers={"Content-Type": "image/png"}).json()
        assert wait_terminal(http, job["id"])["status"] == "succeeded"
        tiles = http.get(f"/v1/jobs/{job['id']}/tiles").json()["tiles"]
        assert len(tiles) >= 4 and {"index", "x", "y", "w", "h"} <= set(tiles[0])
        edited = http.patch(f"/v1/jobs/{job['id']}/tiles/1", json={"prompt": "mossy stone"})
        assert edited.status_code == 200 and edited.json()["prompt"] == "mossy stone"
        assert http.patch(f"/v1/jobs/{job['id']}/tiles/999",
                          json={"prompt": "x"}).status_code == 404
        rerun = http.post(f"/v1/jobs/{job['id']}/rerun", json={"tiles": [1]})
        assert rerun.status_code == 202, rerun.text
        new = rerun.json()
        assert new["id"] != job["id"] and rerun.headers["location"].endswith(new["id"])
        assert wait_terminal(http, new["id"])["status"] == "succeeded"


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow  # a real Celery runner process (module fixture)
def test_health_ready_and_metrics(celery_server) -> None:
    series = ('aat_jobs{status="succeeded"}', 'aat_submissions_total{result="created"}',
              'aat_submissions_total{result="duplicate"}',
              'aat_http_requests_total{method="POST",route="/v1/jobs",status="202"}')
    with celery_server.client() as http:
        assert http.get("/v1/health").json()["status"] == "ok"
        ready = http.get("/v1/ready")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert list(checks) == ["store", "broker", "runners", "artifacts", "gpu"]
        assert checks["runners"]["detail"].startswith("1 alive: aat-runner-"), checks
        before = http.get("/metrics").text
        job = http.post("/v1/jobs", params=SMALL, content=png_bytes(16, 16, seed=9),
                        headers={"Content-Type": "image/png"}).json()
        wait_terminal(http, job["id"])
        http.post("/v1/jobs", params=SMALL, content=png_bytes(16, 16, seed=9),
                  headers={"Content-Type": "image/png"})
        after = http.get("/metrics").text
    assert [_metric(after, s) - _metric(before, s) for s in series] == [1, 1, 1, 1]
    assert "aat_cost_usd_total" in after
    stage_counts = [line for line in after.splitlines()
                    if line.startswith("aat_stage_seconds_recent{") and 'stat="count"' in line]
    assert len(stage_counts) >= 2, "per-stage durations of finished jobs are exported"


def test_ready_says_which_dependency_is_down(queued_server) -> None:
    server = queued_server(broker_url="redis://127.0.0.1:1/0")
    with server.client() as http:
        start = time.monotonic()
        ready = http.get("/v1/ready")
        assert time.monotonic() - start < 30
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["broker"]["ok"] is False and checks["store"]["ok"] is True


def test_ready_requests_arriving_together_share_one_check(queued_server) -> None:
    """Several System pages open: requests that arrive while a readiness check runs (here the
    runners check waits its 3 s for a Celery runner that never answers) get that check's
    answer instead of each asking the runners again; the next request checks afresh."""
    import threading

    fleet = queued_server()
    with fleet.client() as http:
        before = _metric(http.get("/metrics").text, "aat_ready_checks_total")
    answers: list[httpx.Response] = []
    together = threading.Barrier(4)

    def ask() -> None:
        with fleet.client() as http:
            together.wait()
            answers.append(http.get("/v1/ready"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [503] * 4
    assert len({a.text for a in answers}) == 1  # one check's answer
    assert "no job runner on queue" in answers[0].json()["checks"]["runners"]["detail"]
    with fleet.client() as http:
        assert _metric(http.get("/metrics").text, "aat_ready_checks_total") == before + 1
        assert http.get("/v1/ready").status_code == 503  # asked again: a new check
        assert _metric(http.get("/metrics").text, "aat_ready_checks_total") == before + 2


def test_ready_names_the_job_runners_and_the_artifact_store(queued_server) -> None:
    """`GET /v1/ready` (the studio's System page) has `aat doctor`'s runners and artifacts
    rows: the job threads of an `aat up`, a Celery queue no runner answers on (503, saying how
    to start one), and the artifact store written and read back."""
    embedded = queued_server(broker_url=None, job_threads=3)
    with embedded.client() as http:
        ready = http.get("/v1/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert list(checks) == ["store", "broker", "runners", "artifacts", "gpu"]
    assert checks["runners"] == {"ok": True, "detail": "3 job threads in this process (`aat up`)"}
    assert checks["artifacts"]["ok"] is True
    where = embedded.settings.data_dir / "artifacts"
    assert checks["artifacts"]["detail"].startswith(f"{where}: writable, "), checks

    fleet = queued_server()
    with fleet.client() as http:
        ready = http.get("/v1/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["broker"]["ok"] is True and checks["runners"]["ok"] is False
    assert checks["runners"]["detail"] == (
        f"no job runner on queue {fleet.settings.celery_queue} answered within 3 s; start one "
        "with `aat runner`")
