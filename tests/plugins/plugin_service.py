"""Helpers for the plugin tests: a handle on the real service (started by ``conftest.py``)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TOKEN = "plugin-test-token"


@dataclass
class Server:
    url: str
    token: str
    data_dir: Path

    def get_json(self, path: str) -> dict:
        return self.call("GET", path)

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/octet-stream") -> dict:
        """One authorised request; the JSON reply."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
