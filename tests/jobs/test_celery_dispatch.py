"""The Celery dispatcher: broker readiness, and a job canceled while queued stays canceled when
its message reaches a runner (real Redis, `aat runner`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs_helpers import png, small_params, wait_until

from service.core.jobs import JobStatus
from service.jobs.executor import CeleryDispatcher


def test_ready_reports_the_broker(job_settings: Any, redis_queue: tuple[str, str]) -> None:
    broker, queue = redis_queue
    assert CeleryDispatcher(job_settings(broker_url=broker, celery_queue=queue)).ready()
    assert not CeleryDispatcher(job_settings(broker_url="redis://127.0.0.1:1/0")).ready()


def test_a_job_canceled_while_queued_is_never_run(celery_setup: Callable[..., Any]) -> None:
    svc, runners, emu = celery_setup(workers=2, latency_s=0.01)
    canceled, _ = svc.submit(png(seed=1), filename="a.png", params=small_params())
    assert svc.cancel(canceled.id).status == JobStatus.canceled
    other, _ = svc.submit(png(seed=2), filename="b.png", params=small_params())
    runners.start(1)
    wait_until(lambda: svc.get(other.id).status == JobStatus.succeeded, 60, "the other job")
    after = svc.get(canceled.id)
    assert after.status == JobStatus.canceled and after.attempts == 0 and after.output is None
    assert emu.stats("upscale")["submitted"] == 4  # only the other job's tiles
    assert svc.ready() == {"store": True, "broker": True}


def test_a_job_submitted_while_the_broker_is_down_runs_when_a_runner_starts(
        celery_setup: Callable[..., Any], job_settings: Any) -> None:
    from service.jobs.service import build_job_service

    svc, runners, _emu = celery_setup(workers=2, latency_s=0.01)
    down = build_job_service(job_settings(**{**svc.settings.model_dump(),
                                             "broker_url": "redis://127.0.0.1:1/0"}))
    job, created = down.submit(png(seed=4), filename="a.png", params=small_params())
    assert created and down.get(job.id).status == JobStatus.queued  # stored, not lost
    runners.start(1)  # the runner sends stored queued jobs when it starts
    done = wait_until(lambda: (j := svc.get(job.id)).status.terminal and j, 60, "job end")
    assert done.status == JobStatus.succeeded, done.error
