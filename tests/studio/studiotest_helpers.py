"""Helpers for the studio tests: `aat up` as a real process aimed at an emulated RunPod."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from proc_helpers import ServiceProcess, aat_service, free_port

# Records every data-state / data-status change with its time, for "did it change live".
RECORDER = """
window.__changes = [];
new MutationObserver((records) => {
  for (const r of records) {
    window.__changes.push({attr: r.attributeName, value: r.target.getAttribute(r.attributeName),
                           index: r.target.dataset.index, t: performance.now()});
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-state", "data-status"]});
document.addEventListener("securitypolicyviolation",
  (e) => console.error("Content Security Policy violation: " + e.violatedDirective));
"""


def wait_status(page: Any, status: str, timeout: float = 60_000) -> None:
    """Until the job view's status badge says ``status``."""
    page.wait_for_selector(f"[data-testid=job-status][data-status={status}]", timeout=timeout)


@dataclass
class Studio:
    """A running `aat up` with the studio at ``url``."""

    url: str
    env: dict[str, str]
    data_dir: Path
    repo: Path
    emulator: Any
    token: str | None = None

    def client(self, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)


def start_studio(root: Path, emulator: Any, **extra: str) -> tuple[Studio, ServiceProcess]:
    """`aat up` in its own process, aimed at ``emulator``; returns when it answers. The caller
    stops it with ``.stop()``."""
    port = free_port()
    repo = root / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    env = dict(
        AAT_DATA_DIR=str(root / "data"), AAT_BACKEND="runpod",
        AAT_SERVER_URL=f"http://127.0.0.1:{port}", PYTHONUNBUFFERED="1",
        RUNPOD_API_KEY=emulator.api_key, AAT_RUNPOD_BASE_URL=emulator.url,
        RUNPOD_UPSCALE_ENDPOINT_ID="upscale", RUNPOD_CAPTION_ENDPOINT_ID="caption",
        RUNPOD_ANIMATE_ENDPOINT_ID="anim", AAT_ANIMATE_EDIT_SIDE="64",
        AAT_RUNPOD_BACKOFF_BASE_S="0.01", AAT_RUNPOD_BACKOFF_MAX_S="0.05",
        AAT_RUNPOD_POLL_MIN_S="0.01", AAT_RUNPOD_POLL_MAX_S="0.1",
        AAT_REPOS=f'{{"game": "{repo}"}}', **extra)
    proc = aat_service("up", env=env, port=port, cwd=root, log=root / "up.log").start()
    return Studio(env["AAT_SERVER_URL"], proc.env, root / "data", repo, emulator,
                  extra.get("AAT_API_TOKEN")), proc
