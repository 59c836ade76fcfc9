"""Main-thread side: the task list, the one module-level timer and applying results.

Worker threads (``client.JobRunner``, ``client.ModelsFetch``) never touch Blender data; they
post events on their queues. :func:`pump` drains those queues on the main thread, updates the
task list the panel draws, and applies finished results to image datablocks. :func:`tick` is
the only timer this add-on ever registers; it returns ``None`` (stops) when nothing is running,
and :func:`shutdown` (called from ``unregister()``) removes it and stops every thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from dataclasses import dataclass, field
from typing import Any

import bpy

from . import client

log = logging.getLogger(__name__)
TICK_S = 0.25
KEEP_FINISHED = 30  # finished rows the panel keeps before the oldest are dropped


@dataclass
class Task:
    """One job (or model-list fetch) as the panel shows it."""

    label: str
    runner: Any
    image_name: str = ""
    mode: str = "REPLACE"  # REPLACE: repoint the datablock; NEW: load as a new image
    state: str = "running"  # running | done | error | canceled
    status: str = "Submitting..."
    progress: float = 0.0
    job_id: str = ""
    page_url: str = ""  # the job's page in the studio (``<server>/jobs/<id>``)
    result_path: str = ""
    result_image: str = ""
    staged: list[str] = field(default_factory=list)  # temp files to remove when finished

    @property
    def active(self) -> bool:
        return self.state == "running"


tasks: list[Task] = []
models: list[str] = []


def _remember(task: Task) -> None:
    finished = [t for t in tasks if not t.active]
    for old in finished[: max(0, len(finished) - KEEP_FINISHED + 1)]:
        tasks.remove(old)
    tasks.append(task)


def start(task: Task) -> Task:
    """Remember ``task``, start its thread and make sure the timer runs."""
    _remember(task)
    task.runner.start()
    ensure_timer()
    return task


def fail(label: str, message: str) -> Task:
    """Show an error that happened before any thread started (bad URL, no image...)."""
    task = Task(label=label, runner=None, state="error", status=f"Error: {message}")
    _remember(task)
    _redraw()
    return task


def busy() -> bool:
    return any(t.active for t in tasks)


def pending_destinations() -> set[str]:
    return {t.runner.dest for t in tasks if t.active and hasattr(t.runner, "dest")}


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        # persistent: opening another .blend must not strand running jobs without a pump
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)


def tick() -> float | None:
    """The add-on's one timer: pump, redraw, keep running only while a task is active."""
    try:
        pump()
    except Exception:  # a timer that raises is unregistered silently by Blender
        log.exception("AI Assets Toolbox: pump failed")
    return TICK_S if busy() else None


def pump() -> int:
    """Drain every task's event queue on the main thread; return the number of events."""
    count = 0
    for task in list(tasks):
        while task.runner is not None:
            try:
                kind, value = task.runner.events.get_nowait()
            except queue.Empty:
                break
            count += 1
            _handle(task, kind, value)
    if count:
        _redraw()
    return count


def _handle(task: Task, kind: str, value: Any) -> None:
    if not task.active:
        return  # canceled locally (e.g. its .blend was closed): never touch images for it
    if kind == "submitted":
        task.job_id, task.status = str(value), "Queued"
        client = getattr(task.runner, "client", None)
        if client is not None:
            task.page_url = f"{client.base_url}/jobs/{task.job_id}"
            print(f"AI Assets Toolbox: {task.label} is job {task.job_id}: {task.page_url}")
    elif kind == "progress":
        fraction, stage = value
        task.progress = max(0.0, min(1.0, float(fraction)))
        task.status = f"{stage or 'running'} {task.progress * 100:.0f}%"
    elif kind == "models":
        models[:] = list(value)
        _set_lora_choices(models)
        _finish(task, "done", f"{len(models)} LoRA(s) on the server")
    elif kind == "done":
        task.result_path, task.progress = str(value), 1.0
        try:
            apply_result(task)
            _finish(task, "done", f"Done: {os.path.basename(task.result_path)}")
        except (RuntimeError, ReferenceError, KeyError) as err:
            _finish(task, "error", f"Result saved to {task.result_path}, but loading it "
                                   f"failed: {err}")
    elif kind == "canceled":
        _finish(task, "canceled", str(value))
    elif kind == "error":
        _finish(task, "error", f"Error: {value}")


def _finish(task: Task, state: str, status: str) -> None:
    task.state, task.status = state, status
    for path in task.staged:
        with contextlib.suppress(OSError):
            os.remove(path)
    task.staged.clear()
    if state == "error":
        log.warning("AI Assets Toolbox: %s: %s", task.label, status)


def apply_result(task: Task) -> None:
    """Point the image at the result (every material follows) or load it as a new image."""
    img = bpy.data.images.get(task.image_name)
    if img is None:
        raise KeyError(f"image {task.image_name!r} no longer exists")
    if task.mode == "NEW":
        new = bpy.data.images.load(task.result_path, check_existing=True)
        task.result_image = new.name
        return
    was_packed = img.packed_file is not None
    if was_packed:
        img.unpack(method="REMOVE")
    img.source = "FILE"
    img.filepath = task.result_path
    img.reload()
    if was_packed:
        img.pack()
    task.result_image = img.name


def _set_lora_choices(names: list[str]) -> None:
    """Mirror the server's LoRA list into every scene's settings, keeping user choices."""
    for scene in bpy.data.scenes:
        settings = getattr(scene, "aat_settings", None)
        if settings is None:
            continue
        known = {item.name: item for item in settings.loras}
        for index in reversed(range(len(settings.loras))):
            if settings.loras[index].name not in names:
                settings.loras.remove(index)
        for name in names:
            if name not in known:
                settings.loras.add().name = name


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.tag_redraw()


def cancel(image_name: str = "") -> int:
    """Ask the running tasks (of ``image_name``, or all) to cancel; return how many."""
    hit = [t for t in tasks if t.active and (not image_name or t.image_name == image_name)]
    for task in hit:
        task.runner.cancel()
        task.status = "Canceling..."
    return len(hit)


@bpy.app.handlers.persistent
def on_load_pre(*_args: Any) -> None:
    """Another .blend is being opened: its images are not the ones the jobs belong to."""
    for task in tasks:
        if task.active:
            task.runner.cancel()
            _finish(task, "canceled", "Canceled: the file was closed")


def clear_finished() -> None:
    tasks[:] = [t for t in tasks if t.active]


def shutdown(join_s: float = 2.0) -> None:
    """Remove the timer and stop every thread; called from ``unregister()``."""
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    live = [t for t in tasks if t.runner is not None]
    for task in live:
        task.runner.cancel()
    for task in live:
        if task.runner.is_alive():
            task.runner.join(timeout=join_s / max(1, len(tasks)))
    tasks.clear()


def new_fetch(base_url: str, token: str) -> Task:
    return Task(label="LoRA list", runner=client.ModelsFetch(client.JobClient(base_url, token)),
                status="Fetching LoRAs...")
