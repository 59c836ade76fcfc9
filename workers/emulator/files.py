"""The emulator's file shelf: where the public-endpoint stand-in leaves its output images.

RunPod's public endpoints answer with a URL on ``image.runpod.ai``; the emulator answers with
``<emulator>/_emulator/files/<name>``, served by :mod:`workers.emulator.app`. The base URL is
set when an :class:`~workers.emulator.EmulatorServer` starts (one emulator per process).
"""

from __future__ import annotations

import secrets
import threading


class Shelf:
    def __init__(self) -> None:
        self.base_url = "http://127.0.0.1:8600"
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes, ext: str) -> str:
        name = f"{secrets.token_hex(8)}{ext}"
        with self._lock:
            self._files[name] = data
            while len(self._files) > 256:
                self._files.pop(next(iter(self._files)))
        return f"{self.base_url}/_emulator/files/{name}"

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._files.get(name)


SHELF = Shelf()
