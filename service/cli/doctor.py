"""`aat doctor`'s checks: settings, job store, broker, job runners, artifact store, RunPod
endpoints, where animations get their frames, the API.

Each check returns a :class:`Check` whose ``detail`` says what was found or, on failure, what
to change. Checks never raise: a broken dependency is a finding, not a crash.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.backends.base import describe_endpoint, describe_health
from service.core.errors import AatError
from service.settings import Settings, load_settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_store(settings: Settings) -> Check:
    url = settings.effective_database_url
    shown = url.split("@")[-1] if "@" in url else url
    try:
        from sqlalchemy import create_engine, text

        if url.startswith("sqlite") and not settings.data_dir.exists():
            return Check("store", True, f"{shown} (created at first start)")
        engine = create_engine(url, pool_pre_ping=True)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return Check("store", True, shown)
    except ModuleNotFoundError as exc:
        from service.cli.errors import missing_extra

        needs = missing_extra(exc)
        if needs is None:
            raise
        return Check("store", False, f"{shown}: needs {needs}")
    except Exception as exc:  # report, do not crash
        return Check("store", False, f"{shown}: {str(exc).splitlines()[0][:200]}; fix "
                     "AAT_DATABASE_URL or start the database")


def check_broker(settings: Settings) -> Check:
    if not settings.broker_url:
        return Check("broker", True, "none: `aat up` runs jobs in-process (set AAT_BROKER_URL "
                     "for Celery runners)")
    try:
        import redis

        client = redis.Redis.from_url(settings.broker_url, socket_timeout=3,
                                      socket_connect_timeout=3)
        client.ping()
        client.close()
        return Check("broker", True, settings.broker_url.split("@")[-1])
    except Exception as exc:  # report, do not crash
        return Check("broker", False, f"{settings.broker_url.split('@')[-1]}: {exc}; start "
                     "Redis or fix AAT_BROKER_URL")


def _no_gpu_hint(settings: Settings) -> str:
    """Name what is missing for diffusion refine; a half-done RunPod setup says which half."""
    key, endpoint = settings.runpod_api_key, settings.runpod_upscale_endpoint_id
    if key and not endpoint:
        return ("no GPU backend: RUNPOD_API_KEY is set but RUNPOD_UPSCALE_ENDPOINT_ID is not; "
                "set it to your upscale endpoint's id for diffusion refine")
    if endpoint and not key:
        return ("no GPU backend: RUNPOD_UPSCALE_ENDPOINT_ID is set but RUNPOD_API_KEY is not; "
                "set it for diffusion refine")
    return ("no GPU backend: base upscale only (set RUNPOD_API_KEY and "
            "RUNPOD_UPSCALE_ENDPOINT_ID for diffusion refine)")


def check_gpu(settings: Settings) -> Check:
    kind = settings.effective_backend
    if kind == "none":
        return Check("gpu", True, _no_gpu_hint(settings))
    try:
        from service.backends.factory import make_backend

        backend = make_backend(settings)
        assert backend is not None

        async def probe() -> dict[str, object]:
            try:
                return await asyncio.wait_for(backend.health(), 15)
            finally:
                await backend.aclose()

        info = asyncio.run(probe())
    except Exception as exc:  # report, do not crash
        hint = "; check RUNPOD_API_KEY and the endpoint ids" if kind == "runpod" else ""
        return Check("gpu", False, f"{kind}: {exc}{hint}")
    ok = bool(info.get("ok", True))
    return Check("gpu", ok, f"{kind}: {describe_health(info)}")


def check_animate(settings: Settings) -> Check:
    """Where `animate` jobs get their frames (``AAT_ANIMATE_BACKEND``): our worker's endpoint
    answers its health call, or RunPod's public endpoint has a bucket for the sprite's URL.
    Nothing set up for animation is fine (ok, with what to set)."""
    from service.backends.edit import edit_backend_kind, open_edit_backend

    kind = edit_backend_kind(settings)
    if kind == "public" and settings.animate_backend == "auto" and not settings.artifacts_url:
        return Check("animate", True, "not set up: set RUNPOD_ANIMATE_ENDPOINT_ID (your animate "
                     "worker), or AAT_ARTIFACTS_URL (a bucket) for RunPod's public edit endpoint")
    try:
        backend = open_edit_backend(settings)

        async def probe() -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(backend.health(), 15) if kind == "worker" else None
            finally:
                await backend.aclose()

        info = asyncio.run(probe())
    except AatError as exc:
        return Check("animate", False, exc.message)
    except Exception as exc:  # report, do not crash
        return Check("animate", False, f"{kind}: {exc}; check RUNPOD_API_KEY and "
                     "RUNPOD_ANIMATE_ENDPOINT_ID")
    if info is None:
        return Check("animate", True, f"RunPod's public endpoint {settings.runpod_edit_public_slug}"
                     f", the sprite sent as a presigned URL from {settings.artifacts_url}")
    return Check("animate", True, describe_endpoint("animate", info))


def check_api(settings: Settings) -> Check:
    from service.client import UNAVAILABLE, ServiceClient

    url = settings.server_url
    try:
        with ServiceClient.from_settings(settings) as client:
            version = client.health().get("version")
            body = client.ready()
    except AatError as exc:
        if exc.code == UNAVAILABLE:
            return Check("api", False, f"{url} not reachable; start it with `aat up` or fix "
                         "AAT_SERVER_URL (AAT_PORT when it runs here)")
        if getattr(exc, "http_status", 0) in (401, 403):
            return Check("api", False, f"{url} refused the token; set AAT_API_TOKEN to the "
                         "server's token")
        return Check("api", False, f"{url}: {exc.message}")
    down = [k for k, c in (body.get("checks") or {}).items() if not c.get("ok")]
    if down:
        return Check("api", False, f"{url} v{version} is up but not ready: {', '.join(down)}")
    return Check("api", True, f"{url} v{version} ready")


def check_runners(settings: Settings, *, this_host: bool = False) -> Check:
    """Job runners consuming ``settings.celery_queue``, asked through the broker (Celery's
    remote control); ``this_host``: only those named after this machine's host name (the
    container health check)."""
    if not settings.broker_url:
        return Check("runners", True, "none needed: `aat up` runs jobs in-process")
    host = socket.gethostname() if this_host else None
    try:
        from service.jobs.celery_app import describe_runners, make_celery, runners_on_queue

        app = make_celery(settings)
        try:
            names = runners_on_queue(app, settings.celery_queue, host=host)
        finally:
            app.close()
    except Exception as exc:  # report, do not crash
        return Check("runners", False, f"could not ask the broker: {exc}")
    ok, detail = describe_runners(names, settings.celery_queue, f" on {host}" if host else "")
    return Check("runners", ok, detail)


def check_artifacts(settings: Settings) -> Check:
    """The artifact store accepts a write and gives it back (the bucket, when configured)."""
    from service.storage.stores import probe_artifacts

    return Check("artifacts", *probe_artifacts(settings))


CHECKS = ("store", "broker", "runners", "artifacts", "gpu", "animate", "api")


def run_checks(only: list[str] | None = None, *, this_host: bool = False) -> list[Check]:
    """The checks named in ``only`` (default all, in :data:`CHECKS` order); later checks are
    skipped when the settings do not load."""
    try:
        settings = load_settings()
    except AatError as exc:
        return [Check("settings", False, exc.message)]
    token = "set" if settings.api_token else "not set (loopback only)"
    found = [Check("settings", True, f"data {settings.data_dir}, API token {token}")]
    table: dict[str, Callable[[Settings], Check]] = {
        "store": check_store, "broker": check_broker,
        "runners": lambda s: check_runners(s, this_host=this_host),
        "artifacts": check_artifacts, "gpu": check_gpu, "animate": check_animate,
        "api": check_api,
    }
    for name in CHECKS:
        if not only or name in only:
            found.append(table[name](settings))
    return found
