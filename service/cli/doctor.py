"""`aat doctor`'s checks: settings, job store, broker, RunPod endpoints, the API.

Each check returns a :class:`Check` whose ``detail`` says what was found or, on failure, what
to change. Checks never raise: a broken dependency is a finding, not a crash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

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
        from service.cli import missing_extra

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
        from service.api.app import build_backend

        backend = build_backend(settings)
        assert backend is not None

        async def probe() -> dict[str, object]:
            try:
                return await asyncio.wait_for(backend.health(), 15)
            finally:
                await backend.aclose()

        info = asyncio.run(probe())
    except Exception as exc:  # report, do not crash
        return Check("gpu", False, f"{kind}: {exc}; check RUNPOD_API_KEY and the endpoint ids")
    ok = bool(info.get("ok", True))
    shown = ", ".join(f"{k}={v}" for k, v in sorted(info.items()) if k != "ok")
    return Check("gpu", ok, f"{kind}: {shown}"[:300])


def check_api(settings: Settings) -> Check:
    url = settings.server_url
    token = settings.api_token.get_secret_value() if settings.api_token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            version = http.get("/v1/health").json().get("version")
            ready = http.get("/v1/ready")
    except httpx.HTTPError as exc:
        return Check("api", False, f"{url} not reachable ({exc.__class__.__name__}); start "
                     "it with `aat up` or fix AAT_SERVER_URL")
    if ready.status_code in (401, 403):
        return Check("api", False, f"{url} refused the token; set AAT_API_TOKEN to the "
                     "server's token")
    body = ready.json()
    down = [k for k, c in (body.get("checks") or {}).items() if not c.get("ok")]
    if down:
        return Check("api", False, f"{url} v{version} is up but not ready: {', '.join(down)}")
    return Check("api", True, f"{url} v{version} ready")


def run_checks() -> list[Check]:
    """All checks in order; later checks are skipped when the settings do not load."""
    try:
        settings = load_settings()
    except AatError as exc:
        return [Check("settings", False, exc.message)]
    token = "set" if settings.api_token else "not set (loopback only)"
    found = [Check("settings", True, f"data {settings.data_dir}, API token {token}")]
    for check in (check_store, check_broker, check_gpu, check_api):
        found.append(check(settings))
    return found
