"""RunPod provisioning from code: templates and serverless endpoints through REST v2.

``aat deploy runpod`` (``service/cli/deploy.py``) drives three pure steps and one effectful one:

1. :func:`desired` — what the settings ask for: per worker (``upscale``, ``caption``) one
   serverless template (image, ``serverless: true``, no SSH/Jupyter, container disk) and one
   queue endpoint (GPU pools, min/max workers, idle timeout, FlashBoot, execution timeout,
   the LoRA network volume for the upscale worker).
2. :func:`plan` — compare with what the account has (:class:`RunPodRest` GETs) and list
   :class:`Action` s: ``create``, ``update`` (only the fields that differ) or ``keep``.
   Endpoints are found by the id we stored (``RUNPOD_*_ENDPOINT_ID``) first, then by name;
   RunPod may append ``" -fb"`` to a FlashBoot endpoint's name, so a name matches by prefix.
3. :func:`apply` — send the actions in order (templates before the endpoints that use them);
   returns the endpoint id per worker. Running it twice changes nothing the second time.
4. :func:`plan_down` — delete our endpoints, then our templates (a template in use cannot go).

Facts about the API: ``docs/guide/deploy-runpod.md`` (with sources). The REST host is
``api.runpod.io/v2`` (management), not ``api.runpod.ai/v2`` (jobs). Errors are RFC 9457 problem
JSON; 401/403 raise :class:`BackendAuthError`, 422 (a contract violation, never retried) and
other 4xx raise :class:`BackendError` with RunPod's detail, 429/5xx are retried a few times
honouring ``Retry-After``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.core.errors import BackendAuthError, BackendError, BackendUnavailable, ConfigError
from service.settings import Settings

log = logging.getLogger(__name__)

WORKERS = ("upscale", "caption")
LORA_MOUNT = "/runpod-volume"  # where serverless workers see a network volume


@dataclass(frozen=True)
class WorkerSpec:
    kind: str
    template: dict[str, Any]
    endpoint: dict[str, Any]  # without templateId (filled in once the template exists)


@dataclass
class Action:
    verb: str  # create | update | keep | delete
    what: str  # template | endpoint
    kind: str  # upscale | caption
    name: str
    id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)  # create: all; update: what differs

    def describe(self) -> str:
        shown = f"{self.what} {self.name}" + (f" ({self.id})" if self.id else "")
        if self.verb == "update":
            return f"update {shown}: {', '.join(sorted(self.body))}"
        return f"{self.verb} {shown}"


def desired(settings: Settings) -> list[WorkerSpec]:
    """The templates and endpoints the settings ask for (workers without an image are left
    out; none at all is a ConfigError naming the setting)."""
    specs = []
    images = {"upscale": settings.deploy_upscale_image, "caption": settings.deploy_caption_image}
    pools = {"upscale": settings.deploy_upscale_gpu_pools,
             "caption": settings.deploy_caption_gpu_pools}
    for kind in WORKERS:
        image = images[kind]
        if not image:
            continue
        name = f"{settings.deploy_name_prefix}-{kind}"
        template = {"name": name, "image": image, "serverless": True, "startSsh": False,
                    "startJupyter": False, "disk": settings.deploy_disk_gb, "env": {}}
        endpoint: dict[str, Any] = {
            "name": name, "type": "QUEUE",
            "gpu": {"pools": list(pools[kind]), "count": 1},
            "workers": {"min": settings.deploy_workers_min, "max": settings.deploy_workers_max,
                        "idleTimeout": settings.deploy_idle_timeout_s},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
            "flashboot": "FLASHBOOT" if settings.deploy_flashboot else "OFF",
            "timeout": settings.runpod_execution_timeout_s * 1000,
        }
        if kind == "upscale" and settings.deploy_network_volume_id:
            endpoint["networkVolumes"] = [settings.deploy_network_volume_id]
        specs.append(WorkerSpec(kind, template, endpoint))
    if not specs:
        raise ConfigError("nothing to deploy: set AAT_DEPLOY_UPSCALE_IMAGE (and optionally "
                          "AAT_DEPLOY_CAPTION_IMAGE) to the worker images you pushed")
    return specs


class RunPodRest:
    """A small synchronous client for RunPod's management REST API (v2)."""

    def __init__(self, base_url: str, api_key: str, *, attempts: int = 4,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.attempts = attempts
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=30, transport=transport,
                                 headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.attempts):
            try:
                resp = self.http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt + 1 == self.attempts:
                    raise BackendUnavailable(f"RunPod REST API not reachable at "
                                             f"{self.http.base_url}: {exc}") from exc
                time.sleep(0.5 * 2**attempt)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                if attempt + 1 == self.attempts:
                    raise BackendUnavailable(f"RunPod REST API: {method} {path} answered "
                                             f"{resp.status_code} {attempt + 1} times")
                time.sleep(_retry_after(resp, 0.5 * 2**attempt))
                continue
            if resp.status_code in (401, 403):
                raise BackendAuthError(f"RunPod refused the API key ({resp.status_code}); "
                                       "check RUNPOD_API_KEY and its permissions")
            if resp.status_code >= 400:
                raise BackendError(f"RunPod REST API: {method} {path} -> {resp.status_code}: "
                                   f"{_problem(resp)}", code="runpod_rejected")
            return resp.json() if resp.content else None
        raise AssertionError("unreachable")

    def templates(self) -> list[dict[str, Any]]:
        return _items(self.call("GET", "/templates"), "templates")

    def endpoints(self) -> list[dict[str, Any]]:
        return _items(self.call("GET", "/serverless"), "endpoints")


def _items(body: Any, key: str) -> list[dict[str, Any]]:
    # the v2 list routes answer {"endpoints": [...]} / {"templates": [...]}; accept a bare list
    items = body.get(key, []) if isinstance(body, dict) else body
    return list(items or [])


def _retry_after(resp: httpx.Response, fallback: float) -> float:
    try:
        return min(30.0, max(0.0, float(resp.headers.get("retry-after", fallback))))
    except ValueError:
        return fallback


def _problem(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    detail = body.get("detail") or body.get("title") or body.get("error") or str(body)
    errors = body.get("errors")
    return f"{detail}" + (f" ({errors})" if errors else "")


def _differs(want: Any, have: Any) -> bool:
    """True if ``have`` lacks or contradicts anything in ``want`` (extra keys in ``have``, set
    by RunPod, do not count)."""
    if isinstance(want, dict):
        return not isinstance(have, dict) or any(_differs(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return not isinstance(have, list) or sorted(map(str, want)) != sorted(map(str, have))
    return bool(want != have)


def _name_matches(want: str, have: str | None) -> bool:
    return have == want or (have or "").startswith(f"{want} ")  # FlashBoot's " -fb"


def _changes(want: dict[str, Any], have: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in want.items()
            if k != "name" and _differs(v, have.get(k))}


def _find_endpoint(endpoints: list[dict[str, Any]], name: str, known_id: str | None
                   ) -> dict[str, Any] | None:
    by_id = [e for e in endpoints if known_id and e.get("id") == known_id]
    by_name = [e for e in endpoints if _name_matches(name, e.get("name"))]
    found = by_id or by_name
    return found[0] if found else None


def known_ids(settings: Settings) -> dict[str, str | None]:
    return {"upscale": settings.runpod_upscale_endpoint_id,
            "caption": settings.runpod_caption_endpoint_id}


def plan(rest: RunPodRest, specs: list[WorkerSpec], ids: dict[str, str | None]) -> list[Action]:
    """Actions that make the account match ``specs`` (see module docstring)."""
    templates, endpoints = rest.templates(), rest.endpoints()
    actions: list[Action] = []
    for spec in specs:
        name = spec.template["name"]
        have_t = next((t for t in templates if t.get("name") == name), None)
        if have_t is None:
            actions.append(Action("create", "template", spec.kind, name, body=spec.template))
        else:
            diff = _changes(spec.template, have_t)
            actions.append(Action("update" if diff else "keep", "template", spec.kind, name,
                                  have_t.get("id"), diff))
        have_e = _find_endpoint(endpoints, spec.endpoint["name"], ids.get(spec.kind))
        want_e = dict(spec.endpoint)
        # the template's id once it exists; "" (always differs) when it is created in this run
        want_e["templateId"] = have_t.get("id") if have_t is not None else ""
        if have_e is None:
            actions.append(Action("create", "endpoint", spec.kind, spec.endpoint["name"],
                                  body={k: v for k, v in want_e.items() if k != "templateId"}))
        else:
            diff = _changes(want_e, have_e)
            actions.append(Action("update" if diff else "keep", "endpoint", spec.kind,
                                  have_e.get("name") or spec.endpoint["name"], have_e.get("id"),
                                  diff))
    return actions


def apply(rest: RunPodRest, actions: list[Action]) -> dict[str, str]:
    """Carry out ``actions``; returns ``{kind: endpoint_id}`` of the endpoints now in place."""
    template_ids: dict[str, str] = {}
    endpoint_ids: dict[str, str] = {}
    for action in actions:
        if action.what == "template":
            if action.verb == "create":
                action.id = rest.call("POST", "/templates", action.body)["id"]
            elif action.verb == "update":
                rest.call("PATCH", f"/templates/{action.id}", action.body)
            elif action.verb == "delete":
                rest.call("DELETE", f"/templates/{action.id}")
                continue
            template_ids[action.kind] = str(action.id)
            continue
        if action.verb == "delete":
            rest.call("DELETE", f"/serverless/{action.id}")
            continue
        if "templateId" in action.body or action.verb == "create":
            action.body["templateId"] = template_ids[action.kind]
        if action.verb == "create":
            action.id = rest.call("POST", "/serverless", action.body)["id"]
        elif action.verb == "update":
            rest.call("PATCH", f"/serverless/{action.id}", action.body)
        endpoint_ids[action.kind] = str(action.id)
    return endpoint_ids


def plan_down(rest: RunPodRest, settings: Settings) -> list[Action]:
    """Delete the endpoints, then the templates, that :func:`plan` would manage."""
    templates, endpoints = rest.templates(), rest.endpoints()
    ids = known_ids(settings)
    gone: list[Action] = []
    later: list[Action] = []
    for kind in WORKERS:
        name = f"{settings.deploy_name_prefix}-{kind}"
        have_e = _find_endpoint(endpoints, name, ids.get(kind))
        if have_e is not None:
            gone.append(Action("delete", "endpoint", kind, have_e.get("name") or name,
                               have_e.get("id")))
        later += [Action("delete", "template", kind, name, t.get("id"))
                  for t in templates if t.get("name") == name]
    return gone + later
