"""The emulator's provisioning routes: RunPod's management REST API (v2), in memory.

Routes (as on ``https://api.runpod.io/v2``): ``GET/POST /v2/templates``,
``GET/PATCH/DELETE /v2/templates/{id}``, ``GET/POST /v2/serverless``,
``GET/PATCH/DELETE /v2/serverless/{id}``. Bearer auth like the job routes. Errors are RFC 9457
problem JSON (``{title, status, detail, errors?}``): 401 without the key, 404 for an unknown
id, 422 listing each missing required field (``name``/``image`` for a template; ``name``,
``type``, ``scaling``, ``templateId`` or ``image``, ``gpu`` or ``cpu`` for an endpoint),
400 for deleting a template an endpoint still uses. An endpoint created here also becomes a
live job endpoint (``on_create``), so ``/v2/{id}/health`` answers for it as it would on RunPod.
Test hook: ``GET /_emulator/provision/requests`` lists every provisioning request received
(method, path, JSON body), oldest first.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

ENDPOINT_DEFAULTS: dict[str, Any] = {
    "workers": {"min": 0, "max": 3, "idleTimeout": 5}, "timeout": 300_000, "flashboot": "OFF",
    "networkVolumes": [], "dataCenterIds": [], "env": {},
}
TEMPLATE_DEFAULTS: dict[str, Any] = {
    "serverless": False, "startSsh": True, "startJupyter": True, "env": {}, "disk": 50,
}


def _problem(status: int, title: str, detail: str, errors: list[str] | None = None
             ) -> JSONResponse:
    body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def add_provisioning_routes(app: FastAPI, api_key: str, *,
                            on_create: Callable[[str], Awaitable[None]],
                            on_delete: Callable[[str], Awaitable[None]]) -> None:
    """Mount the routes on ``app`` (before the job routes, whose paths they would shadow)."""
    templates: dict[str, dict[str, Any]] = {}
    endpoints: dict[str, dict[str, Any]] = {}
    requests: list[dict[str, Any]] = []
    expected = f"Bearer {api_key}".encode()

    async def admit(request: Request, table: dict[str, dict[str, Any]] | None = None,
                    key: str = "", kind: str = ""
                    ) -> tuple[dict[str, Any] | None, JSONResponse | None]:
        """The request's JSON body, or the problem to answer instead: 401 without the key,
        400 for a body that is not an object, 404 when ``key`` is not in ``table``."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        requests.append({"method": request.method, "path": request.url.path, "body": body})
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return None, _problem(401, "Unauthorized", "missing bearer token")
        if raw and not isinstance(body, dict):
            return None, _problem(400, "Bad Request", "the body must be a JSON object")
        if table is not None and key not in table:
            return None, _problem(404, "Not Found", f"{kind} {key} not found")
        return body, None

    def now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # ---- templates ---------------------------------------------------------------------------
    @app.get("/v2/templates")
    async def list_templates(request: Request) -> Response:
        _, denied = await admit(request)
        return denied or JSONResponse({"templates": list(templates.values())})

    @app.post("/v2/templates")
    async def create_template(request: Request) -> Response:
        body, denied = await admit(request)
        if denied:
            return denied
        body = body or {}
        missing = [f"{k} is required" for k in ("name", "image") if not body.get(k)]
        if missing:
            return _problem(422, "Unprocessable Entity", "invalid template", missing)
        if any(t["name"] == body["name"] for t in templates.values()):
            return _problem(400, "Bad Request", f"a template named {body['name']} exists")
        tid = f"tpl_{secrets.token_hex(5)}"
        templates[tid] = {**TEMPLATE_DEFAULTS, **body, "id": tid, "createdAt": now()}
        return JSONResponse(templates[tid], status_code=201)

    @app.get("/v2/templates/{tid}")
    async def get_template(tid: str, request: Request) -> Response:
        _, denied = await admit(request, templates, tid, "template")
        if denied:
            return denied
        return JSONResponse(templates[tid])

    @app.patch("/v2/templates/{tid}")
    async def patch_template(tid: str, request: Request) -> Response:
        body, denied = await admit(request, templates, tid, "template")
        if denied:
            return denied
        templates[tid].update({k: v for k, v in (body or {}).items() if k != "id"})
        return JSONResponse(templates[tid])

    @app.delete("/v2/templates/{tid}")
    async def delete_template(tid: str, request: Request) -> Response:
        _, denied = await admit(request, templates, tid, "template")
        if denied:
            return denied
        users = [e["id"] for e in endpoints.values() if e.get("templateId") == tid]
        if users:
            return _problem(400, "Bad Request", f"template {tid} is used by {', '.join(users)}")
        del templates[tid]
        return Response(status_code=204)

    # ---- serverless endpoints ----------------------------------------------------------------
    @app.get("/v2/serverless")
    async def list_endpoints(request: Request) -> Response:
        _, denied = await admit(request)
        return denied or JSONResponse({"endpoints": list(endpoints.values())})

    @app.post("/v2/serverless")
    async def create_endpoint(request: Request) -> Response:
        body, denied = await admit(request)
        if denied:
            return denied
        body = body or {}
        errors = [f"{k} is required" for k in ("name", "type", "scaling") if not body.get(k)]
        if not (body.get("templateId") or body.get("image")):
            errors.append("one of templateId or image is required")
        if bool(body.get("gpu")) == bool(body.get("cpu")):
            errors.append("exactly one of gpu or cpu is required")
        if body.get("templateId") and body["templateId"] not in templates:
            errors.append(f"templateId {body['templateId']} does not exist")
        if body.get("flashboot", "OFF") not in ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"):
            errors.append("flashboot must be OFF, FLASHBOOT or PRIORITY_FLASHBOOT")
        if errors:
            return _problem(422, "Unprocessable Entity", "invalid endpoint", errors)
        eid = secrets.token_hex(7)
        name = body["name"] + (" -fb" if body.get("flashboot", "OFF") != "OFF" else "")
        endpoints[eid] = {**ENDPOINT_DEFAULTS, **body, "name": name, "id": eid,
                          "createdAt": now(),
                          "requestUrls": {op: f"/v2/{eid}/{op}" for op in ("run", "runsync")}}
        await on_create(eid)
        return JSONResponse(endpoints[eid], status_code=201)

    @app.get("/v2/serverless/{eid}")
    async def get_endpoint(eid: str, request: Request) -> Response:
        _, denied = await admit(request, endpoints, eid, "endpoint")
        if denied:
            return denied
        return JSONResponse(endpoints[eid])

    @app.patch("/v2/serverless/{eid}")
    async def patch_endpoint(eid: str, request: Request) -> Response:
        body, denied = await admit(request, endpoints, eid, "endpoint")
        if denied:
            return denied
        body = body or {}
        if body.get("templateId") and body["templateId"] not in templates:
            return _problem(422, "Unprocessable Entity", "invalid endpoint",
                            [f"templateId {body['templateId']} does not exist"])
        endpoints[eid].update({k: v for k, v in body.items() if k not in ("id", "name")})
        return JSONResponse(endpoints[eid])

    @app.delete("/v2/serverless/{eid}")
    async def delete_endpoint(eid: str, request: Request) -> Response:
        _, denied = await admit(request, endpoints, eid, "endpoint")
        if denied:
            return denied
        del endpoints[eid]
        await on_delete(eid)
        return Response(status_code=204)

    @app.get("/_emulator/provision/requests")
    async def provision_requests() -> list[dict[str, Any]]:
        return requests
