"""Previews over real HTTP: however many distinct previews are asked for at once, at most
``MAX_RENDERS`` of them decode their source at a time (a large output is ~1 GB as RGBA); the
others wait their turn and all arrive; a cached preview does not render again."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from apitest_helpers import png_bytes
from PIL import Image


def test_distinct_previews_at_once_render_at_most_the_limit_and_all_arrive(
        queued_server, monkeypatch) -> None:
    from service.api import previews

    limit = previews.MAX_RENDERS
    changed = threading.Condition()
    inside = peak = renders = 0

    def count() -> None:  # holds each render until one more than the limit runs (or 0.5 s)
        nonlocal inside, peak, renders
        with changed:
            inside += 1
            renders += 1
            peak = max(peak, inside)
            changed.notify_all()
            changed.wait_for(lambda: inside > limit, timeout=0.5)
            inside -= 1

    monkeypatch.setattr(previews, "during_render", count)
    server = queued_server()
    sizes = [16 * (i + 1) for i in range(3 * limit)]  # each max a preview of its own
    with server.client() as http:
        job = http.post("/v1/jobs", content=png_bytes(320, 240),
                        headers={"Content-Type": "image/png"}).json()
        url = f"/v1/jobs/{job['id']}/preview/input"

        def fetch(side: int) -> httpx.Response:
            with server.client() as own:
                return own.get(url, params={"max": side})

        with ThreadPoolExecutor(len(sizes)) as pool:
            replies = list(pool.map(fetch, sizes))
        assert [r.status_code for r in replies] == [200] * len(sizes), [r.text for r in replies]
        assert [max(Image.open(io.BytesIO(r.content)).size) for r in replies] == sizes
        assert peak == limit, f"{peak} previews rendered at once; the limit is {limit}"
        assert renders == len(sizes)
        again = http.get(url, params={"max": sizes[0]})
        assert again.status_code == 200 and again.content == replies[0].content
        assert renders == len(sizes), "a cached preview is read, not rendered"
