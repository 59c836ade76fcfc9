"""Three hosts on one machine: the API on one, a job runner on each of the other two.

Each host is a network namespace with its own address, host name and empty data directory;
they share only what a studio's hosts share: Redis (queue), PostgreSQL (job rows, leases,
tile progress), an S3-protocol server (artifacts, the tile cache; moto_server) and the RunPod
emulator. A batch of jobs runs on both runners; one runner host is killed with SIGKILL while
its job is mid-refine; every job still succeeds, no tile is paid twice (emulator counters),
and the results the API serves are byte-identical to the same jobs run on a single host.
Needs root (it creates namespaces and veth links); CI runs as root.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from jobs.jobs_helpers import (  # tests/jobs (a namespace package beside this folder)
    emulator,
    png,
    runpod_env,
    runpod_settings,
    small_params,
    wait_until,
)
from netns_hosts import Forward, Network
from pg_helpers import empty_pg_schema
from s3_helpers import S3Server
from sqlalchemy.engine import make_url

from service.core.jobs import JobStatus
from service.jobs.service import build_job_service
from service.storage.job_store import SqlJobStore

pytestmark = pytest.mark.slow  # a deployed stack: runners, moto_server, network namespaces

ROOT = Path(__file__).resolve().parents[2]
AAT = [sys.executable, "-c", "from service.cli import main; main()"]
TOKEN = "many-hosts-token"
JOBS = 3  # 96 px at 2x in 64 px tiles: 16 tiles each


def _need_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        pytest.fail("the many-hosts test needs root (network namespaces); CI runs as root")
    pytest.skip("needs root to create network namespaces (CI runs it as root)")


@pytest.fixture
def studio(tmp_path: Path, pg_url: str, redis_queue: tuple[str, str]
           ) -> Iterator[dict[str, Any]]:
    _need_root()
    net = Network(["api", "run1", "run2"])
    closers: list[Any] = [net.close]
    try:
        emu = emulator(workers=2, latency_s=0.5)
        emu.start()
        closers.append(emu.stop)
        db = empty_pg_schema(pg_url)
        broker, queue = redis_queue
        pg, redis_url = make_url(db), urlsplit(broker)
        fwd = {name: Forward(net.gateway, port) for name, port in
               (("pg", pg.port or 5432), ("redis", redis_url.port or 6379), ("emu", emu.port))}
        closers += [f.close for f in fwd.values()]
        s3 = S3Server(host=net.gateway)
        closers.append(s3.stop)
        bucket = s3.make_bucket()
        gw = net.gateway
        host_db = pg.set(host=gw, port=fwd["pg"].port).render_as_string(hide_password=False)
        host_broker = urlunsplit(redis_url._replace(netloc=f"{gw}:{fwd['redis'].port}"))
        rp = runpod_env(emu)
        rp["AAT_RUNPOD_BASE_URL"] = f"http://{gw}:{fwd['emu'].port}/v2"
        base_env = {
            "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
            **rp, "AAT_DATABASE_URL": host_db, "AAT_BROKER_URL": host_broker,
            "AAT_CELERY_QUEUE": queue, "AAT_LEASE_S": "4", "AAT_API_TOKEN": TOKEN,
            "AAT_ARTIFACTS_URL": f"s3://{bucket}/studio", "AAT_S3_ENDPOINT_URL": s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": "studio", "AWS_SECRET_ACCESS_KEY": "studio-secret",
        }

        def env_for(name: str) -> dict[str, str]:
            data = tmp_path / name
            data.mkdir()
            return {**base_env, "AAT_DATA_DIR": str(data)}

        api = net.hosts["api"]
        api.popen([*AAT, "serve", "--host", api.address, "--port", "8765"], env_for("api"),
                  tmp_path / "api.log", ROOT)
        for name in ("run1", "run2"):
            net.hosts[name].popen([*AAT, "runner", "-c", "1", "--loglevel", "INFO"],
                                  env_for(name), tmp_path / f"{name}.log", ROOT)
        url = f"http://{api.address}:8765"

        def api_up() -> bool:
            try:
                return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(api_up, 60, "the API on its host")
        yield {"net": net, "url": url, "emu": emu, "fwd": fwd, "db": db, "s3": s3,
               "bucket": bucket, "logs": tmp_path}
    finally:
        for close in reversed(closers):
            close()


def _single_host_results(tmp_path: Path, job_settings: Any, inputs: list[bytes]) -> list[bytes]:
    """The same jobs on one host: embedded executor, local artifacts, its own emulator."""
    emu = emulator(workers=4, latency_s=0.0)
    emu.start()
    svc = build_job_service(job_settings(data_dir=tmp_path / "single",
                                         **runpod_settings(emu)))
    svc.start()
    try:
        ids = [svc.submit(data, filename=f"rock{i}.png", params=small_params())[0].id
               for i, data in enumerate(inputs)]
        for job_id in ids:
            wait_until(lambda j=job_id: svc.get(j).status.terminal, 60, "single-host job")
            assert svc.get(job_id).status == JobStatus.succeeded
        return [svc.result(job_id)[0].read_bytes() for job_id in ids]
    finally:
        svc.stop()
        emu.stop()


def test_three_hosts_kill_a_runner_host_mid_job(studio: dict[str, Any], tmp_path: Path,
                                                job_settings: Any) -> None:
    url, emu, net = studio["url"], studio["emu"], studio["net"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    store = SqlJobStore(studio["db"])
    inputs = [png(96, seed=i) for i in range(JOBS)]
    params = json.dumps(small_params().model_dump(mode="json", exclude_unset=True))
    http = httpx.Client(base_url=url, headers=auth, timeout=30)
    ids = []
    for i, data in enumerate(inputs):
        resp = http.post("/v1/jobs", files={"file": (f"rock{i}.png", data, "image/png")},
                         data={"params": params})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])

    def running_on() -> dict[str, str]:
        """Running job id -> host name of its runner (owner = host:pid:nonce)."""
        rows = {j: store.get(j) for j in ids}  # one read per job: status and owner agree
        return {j: (r.owner or "").split(":")[0] for j, r in rows.items()
                if r.status == JobStatus.running and r.owner}

    # both runner hosts take a job
    wait_until(lambda: set(running_on().values()) == {"run1", "run2"}, 60, "a job per host")
    victim = next(j for j, host in running_on().items() if host == "run1")

    # kill run1 while its job is mid-refine, outside the instant between RunPod accepting a
    # tile and its id being recorded (run2 is paused for that instant so the count is exact)
    def quiet() -> bool:
        row = store.get(victim)
        refine = row.stages.get("refine") or {}
        if row.status != JobStatus.running or not 4 <= refine.get("done", 0) <= 12:
            return False
        net.hosts["run2"].signal_all(signal.SIGSTOP)
        recorded = sum(1 for j in ids for t in store.get_tiles(j) if t.remote_job_id)
        if recorded == emu.stats("upscale")["submitted"]:
            return True
        net.hosts["run2"].signal_all(signal.SIGCONT)
        time.sleep(0.02)
        return False

    wait_until(quiet, 60, "4 refined tiles on run1 and a quiet moment")
    killed = net.hosts["run1"].signal_all(signal.SIGKILL)
    net.hosts["run2"].signal_all(signal.SIGCONT)
    assert killed
    wait_until(lambda: not net.hosts["run1"].pids(), 10, "run1's processes to die")
    mid = store.get(victim)
    assert mid.status == JobStatus.running
    assert sum(1 for t in store.get_tiles(victim) if t.status == "refined") < 16

    # run2 alone finishes everything, the victim included (its owner is cleared at the end:
    # watch it while it runs)
    victim_hosts = {"run1"}

    def all_ended() -> bool:
        victim_hosts.update(h for j, h in running_on().items() if j == victim)
        return all(store.get(j).status.terminal for j in ids)

    wait_until(all_ended, 150, "all jobs to end")
    rows = [store.get(j) for j in ids]
    assert [r.status for r in rows] == [JobStatus.succeeded] * JOBS, [r.error for r in rows]
    assert store.get(victim).attempts == 2 and victim_hosts == {"run1", "run2"}
    stats = emu.stats("upscale")
    assert stats["submitted"] == 16 * JOBS  # every tile paid exactly once
    assert max(stats["request_keys"].values()) == 1
    # both runner hosts talked to RunPod, Redis, PostgreSQL and the bucket from their addresses
    runner_ips = {net.hosts["run1"].address, net.hosts["run2"].address}
    for name in ("emu", "redis", "pg"):
        assert runner_ips <= set(studio["fwd"][name].sources), name

    # the API host (its own empty data dir) serves results byte-identical to a single host's
    served = []
    for job_id in ids:
        resp = http.get(f"/v1/jobs/{job_id}/result")
        assert resp.status_code == 200
        served.append(resp.content)
    assert served == _single_host_results(tmp_path, job_settings, inputs)
    objects = studio["s3"].client().list_objects_v2(Bucket=studio["bucket"])["Contents"]
    assert sum("/refined/" in o["Key"] for o in objects) == 16 * JOBS
    assert not (tmp_path / "api" / "artifacts" / "refined").exists()  # the API refined nothing
