"""Fixtures for the studio's browser tests: `aat up` as a real process on emulated RunPod
endpoints, and Debian's Chromium driven by Playwright for Python.

Screenshots go to ``build/screenshots/`` (or ``$AAT_SCREENSHOTS``); look at them after a run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from studiotest_helpers import Studio, start_studio

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AAT_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("AAT_SCREENSHOTS", ROOT / "build" / "screenshots"))


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One emulated RunPod (upscale + caption endpoints, echo worker; the animate worker's
    echo stand-in) for the module."""
    from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler
    from workers.emulator.echo import make_handler

    loras = tmp_path_factory.mktemp("loras")
    handler = make_handler(models_dir=loras)
    configs = {eid: EndpointConfig(handler=handler, workers=4, latency_s=0.15,
                                   faults=Faults.parse("", retry_after_s=0.01))
               for eid in ("upscale", "caption")}
    configs["anim"] = EndpointConfig(handler=resolve_handler("animate-echo"), workers=4,
                                     latency_s=0.15)
    server = EmulatorServer(configs, api_key="test-" + secrets.token_hex(8))
    server.start()
    server.test_configs = configs  # type: ignore[attr-defined]  # tests may slow the GPUs down
    server.test_lora_dir = loras  # type: ignore[attr-defined]  # the echo worker's volume
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, emulator: Any) -> Iterator[Studio]:
    """`aat up` without a token (loopback only) on the module's emulator."""
    running, proc = start_studio(tmp_path_factory.mktemp("studio"), emulator)
    yield running
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright (Playwright's own browser download is not used).

    Module scope, not session: while Playwright's sync API is open it keeps an asyncio loop
    running in the main thread, and every later test that calls ``asyncio.run`` would fail."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies, no storage) at 1280x800; script errors and CSP
    violations are collected in ``page.problems`` (tests assert it stays empty)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems  # type: ignore[attr-defined]
    # bounds for a loaded machine, not waits: at load 35 on the 2-core machine a job page took
    # over 20 s to load and the plan grid over 5 s (expect's default) to redraw
    page.set_default_timeout(60_000)
    expect.set_options(timeout=30_000)
    yield page
    context.close()


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """``shot(page, name)`` saves a full-page screenshot to the screenshots folder."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def slow_gpus(emulator: Any) -> Iterator[None]:
    """GPU calls (tiles, captions, frames) take 0.6 s for one test, so the page sees them
    change however loaded the machine is."""
    configs = emulator.test_configs
    before = {eid: c.latency_s for eid, c in configs.items()}
    for config in configs.values():
        config.latency_s = 0.6
    yield
    for eid, config in configs.items():
        config.latency_s = before[eid]


class Gpus:
    """The module emulator's GPU workers, held back for a moment: :meth:`hold` scales every
    endpoint to zero (a job stays running with its tiles or frames waiting on RunPod, however
    long a loaded machine takes to load the page), :meth:`release` brings the workers back."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.held = False

    def hold(self) -> None:
        for eid in self.emulator.test_configs:
            self.emulator.scale(eid, 0)
        self.held = True

    def release(self) -> None:
        for eid, config in self.emulator.test_configs.items():
            self.emulator.scale(eid, config.workers)
        self.held = False


@pytest.fixture
def gpus(emulator: Any) -> Iterator[Gpus]:
    """:class:`Gpus` for one test (released afterwards if still held)."""
    control = Gpus(emulator)
    yield control
    if control.held:
        control.release()
