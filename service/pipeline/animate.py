"""The ``animate`` pipeline: one sprite -> frames -> an engine-ready spritesheet.

Read top to bottom: :func:`prepare` fits the sprite into the cell (feet on the bottom row,
centred) and paints it on the key colour, scaled up by whole pixels to about ``edit_side`` for
the edit model; :func:`generate` asks the :class:`~service.backends.edit.EditBackend` for every
frame (concurrently, each with its own prompt and seed; a retryable failure is tried again)
and :func:`finish_frame` keys, scales and aligns each answer onto the source's anchor;
:func:`outputs` renders the sheet, its Aseprite JSON and Godot ``SpriteFrames`` and the
animated preview. :func:`regenerate` re-runs chosen frames of an existing sheet with new seeds
(the attempt after the one the sheet's JSON records for each, unless one is given) and changes
only their cells; every frame's attempt and seed stay recorded in the JSON.

A frame that fails fails the whole call with its error (``frame 3 of 8: ...``) once the
frames still in flight are cancelled (their RunPod jobs too, see
:mod:`service.backends.edit`): callers write nothing until every frame is in. A
:class:`FrameObserver` (the job runner's ``JobRun``) hears of each frame as it starts, as its
RunPod job is submitted and as it ends, with what it cost, and is asked whether to stop
exactly as upscale tiles ask (:func:`~service.pipeline.observer.run_checked`: a cancel cancels
the frames in flight, a stopping runner lets them finish). A frame whose RunPod job an
interrupted attempt submitted is re-polled (``EditBackend.resume``), not paid for again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

import numpy as np
from PIL import Image

from service.backends.base import CallAccounting, OnSubmitted
from service.backends.edit import EditBackend
from service.core import frames as fr
from service.core.animate import AnimateParams, frame_prompts, frame_seed, parse_size
from service.core.errors import AatError
from service.core.sheet_writers import aseprite_json, godot_sprite_frames
from service.pipeline.observer import run_checked

log = logging.getLogger(__name__)

FRAME_ATTEMPTS = 2  # a retryable frame failure is tried once more


class FrameObserver(Protocol):
    """What the job runner hears of each frame (called from worker threads). The frame's
    RunPod job is waited on only once ``frame_submitted`` returned; if it raises (the id could
    not be recorded) that RunPod job is cancelled and the frame fails with its error."""

    def frame_started(self, index: int) -> None: ...

    def frame_submitted(self, index: int, remote_id: str) -> None: ...

    def frame_finished(self, index: int, cell: np.ndarray, acct: CallAccounting) -> None:
        """Frame ``index`` is in (aligned ``(h, w, 4)`` cell); may raise to stop the rest."""
        ...

    def frame_failed(self, index: int, acct: CallAccounting) -> None:
        """Frame ``index`` failed or was cancelled; ``acct`` is what it cost anyway."""
        ...

    def check(self) -> None:
        """Raise to stop (see :meth:`service.pipeline.observer.PipelineObserver.check`:
        frames in flight are cancelled, unless the exception has ``drain = True``)."""
        ...


class _NoStop:
    def check(self) -> None:
        return None


_NO_STOP = _NoStop()


@dataclass(frozen=True)
class Prepared:
    cell: tuple[int, int]  # (w, h)
    placed: np.ndarray  # the source in its cell, (h, w, 4)
    target: tuple[float, float]  # where every frame's anchor goes
    canvas: np.ndarray  # what the edit model sees: (h*m, w*m, 3) on the key colour


@dataclass
class Animation:
    params: AnimateParams
    prepared: Prepared
    frames: list[np.ndarray]  # aligned (h, w, 4) cells in order
    seeds: list[int]
    distances: list[float] = field(default_factory=list)  # palette drift from the source
    attempts: list[int] = field(default_factory=list)  # which attempt made each frame (0: first)

    def records(self) -> list[tuple[int, int]]:
        """Each frame's ``(attempt, seed)``, as the Aseprite JSON records them."""
        attempts = self.attempts or [0] * len(self.seeds)
        return list(zip(attempts, self.seeds, strict=True))

    @property
    def loop_distance(self) -> float:
        """How far the last frame is from the first (small for a clean loop)."""
        return fr.histogram_distance(self.frames[-1], self.frames[0])


def sprite_rgba(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """A loaded image (8- or 16-bit, alpha or not) as the ``(H, W, 4) uint8`` sprite."""
    rgb8 = rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)
    if alpha is None:
        return np.dstack([rgb8, np.full(rgb8.shape[:2], 255, np.uint8)])
    a8 = alpha if alpha.dtype == np.uint8 else (alpha >> 8).astype(np.uint8)
    return np.dstack([rgb8, a8])


def prepare(source: np.ndarray, params: AnimateParams, edit_side: int = 1024) -> Prepared:
    """``source`` is ``(H, W, 4) uint8`` (a sprite with alpha)."""
    cell = parse_size(params.frame_size) if params.frame_size else (source.shape[1],
                                                                     source.shape[0])
    placed = fr.place(source, cell)
    target = fr.anchor_of(placed, params.anchor) or (cell[0] / 2, float(cell[1]))
    scale = max(1, math.floor(edit_side / max(cell)))
    canvas = fr.on_key(placed, params.key_rgb())
    canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    return Prepared(cell, placed, target, canvas)


def finish_frame(edited: np.ndarray, prep: Prepared, params: AnimateParams) -> np.ndarray:
    """An edit model's answer -> an aligned ``(h, w, 4)`` cell."""
    keyed = fr.key_to_alpha(edited, params.key_rgb())
    return fr.align(fr.resize_rgba(keyed, prep.cell), prep.target, params.anchor)


async def _one(backend: EditBackend, index: int, total: int, prep: Prepared, prompt: str,
               seed: int, acct: CallAccounting,
               on_submitted: OnSubmitted | None = None,
               earlier: str | None = None) -> np.ndarray:
    """Frame ``index`` edited: the RunPod job ``earlier`` an interrupted attempt submitted for
    it, when RunPod still has its result, else a new call (a retryable failure once more)."""
    if earlier is not None:
        resumed = await backend.resume(f"frame-{index}", earlier, acct=acct)
        if resumed is not None:
            return resumed
    for attempt in range(FRAME_ATTEMPTS):
        try:
            return await backend.edit(f"frame-{index}", prep.canvas, prompt, seed, acct=acct,
                                      on_submitted=on_submitted)
        except AatError as exc:
            if not exc.retryable or attempt + 1 == FRAME_ATTEMPTS:
                exc.message = f"frame {index + 1} of {total}: {exc.message}"
                exc.args = (exc.message,)
                raise
            log.warning("frame %d failed (%s), trying again", index + 1, exc.code)
    raise AssertionError("unreachable")


def frame_key(source_sha256: str, params: AnimateParams, index: int, prompt: str, seed: int,
              backend: str, edit_side: int) -> str:
    """Cache key of one generated frame (its aligned cell): the same key is the same paid-for
    frame, so a resumed job or a rerun that keeps a frame takes it from the cache."""
    parts = ["frame", source_sha256, params.model_dump_json(), str(index), prompt, str(seed),
             backend, str(edit_side)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def generate(source: np.ndarray, params: AnimateParams, backend: EditBackend, *,
                   edit_side: int = 1024, indices: Sequence[int] | None = None,
                   attempt: int = 0, concurrency: int = 4,
                   on_frame: Callable[[int], None] | None = None,
                   prompts: Mapping[int, str] | None = None,
                   seeds: Mapping[int, int] | None = None,
                   observer: FrameObserver | None = None,
                   earlier: Mapping[int, str] | None = None,
                   poll_s: float = 0.25) -> dict[int, np.ndarray]:
    """Aligned cells of frames ``indices`` (default: all), generated concurrently.

    Each frame's prompt and seed are ``prompts[i]`` / ``seeds[i]`` when given, else the
    motion's (:func:`~service.core.animate.frame_prompts`) and ``frame_seed(seed, i, attempt)``.
    ``earlier[i]`` is the RunPod job an interrupted attempt submitted for frame ``i`` (the id
    ``frame_submitted`` reported): it is re-polled instead of paid again (``backend.resume``),
    and only submitted afresh when RunPod no longer has a usable result.

    The first frame that fails (or an ``on_frame`` / observer that raises) cancels the frames
    still in flight, waits until they are cancelled, then raises. ``observer.check`` is polled
    every ``poll_s`` (:func:`~service.pipeline.observer.run_checked`, as for upscale tiles): a
    cancel cancels the frames in flight; a stopping runner or a lost lease (``drain``) starts
    no new frame and lets those in flight finish and be cached before it raises."""
    prep = prepare(source, params, edit_side)
    default = frame_prompts(params)
    wanted = list(range(params.frames)) if indices is None else list(indices)
    gate = asyncio.Semaphore(concurrency)
    failed, draining = asyncio.Event(), asyncio.Event()
    out: dict[int, np.ndarray] = {}

    async def run(i: int) -> None:
        acct = CallAccounting()
        prompt = (prompts or {}).get(i) or default[i]
        seed = (seeds or {}).get(i, frame_seed(params.seed, i, attempt))

        async def submitted(remote_id: str) -> None:  # recorded before the job is waited on
            if observer is not None:
                await asyncio.to_thread(observer.frame_submitted, i, remote_id)

        async with gate:
            if failed.is_set() or draining.is_set():  # start nothing new
                return
            try:
                if observer is not None:
                    await asyncio.to_thread(observer.frame_started, i)
                edited = await _one(backend, i, params.frames, prep, prompt, seed, acct,
                                    submitted, (earlier or {}).get(i))
            except BaseException:
                failed.set()  # before the gate lets a waiting frame in
                if observer is not None and (acct.remote_job_ids or acct.possibly_billed):
                    await asyncio.shield(asyncio.to_thread(observer.frame_failed, i, acct))
                raise
        cell = finish_frame(edited, prep, params)
        if observer is not None:
            await asyncio.to_thread(observer.frame_finished, i, cell, acct)
        if on_frame is not None:
            on_frame(i)
        out[i] = cell

    # every cancelled frame cancels its RunPod job before this returns (and the backend closes)
    await run_checked(wanted, run, observer if observer is not None else _NO_STOP, poll_s,
                      draining)
    return out


async def animate(source: np.ndarray, params: AnimateParams, backend: EditBackend, *,
                  edit_side: int = 1024, on_frame: Callable[[int], None] | None = None
                  ) -> Animation:
    cells = await generate(source, params, backend, edit_side=edit_side, on_frame=on_frame)
    return measured(source, params, [cells[i] for i in range(params.frames)],
                    [frame_seed(params.seed, i) for i in range(params.frames)], edit_side)


def measured(source: np.ndarray, params: AnimateParams, cells: list[np.ndarray],
             seeds: list[int], edit_side: int = 1024,
             attempts: list[int] | None = None) -> Animation:
    prep = prepare(source, params, edit_side)
    return Animation(params, prep, cells, seeds,
                     [fr.histogram_distance(c, prep.placed) for c in cells], attempts or [])


async def regenerate(source: np.ndarray, params: AnimateParams, backend: EditBackend,
                     cells: list[np.ndarray], indices: Sequence[int], *,
                     attempt: int | None = None,
                     records: Sequence[tuple[int, int]] | None = None,
                     edit_side: int = 1024) -> Animation:
    """``cells`` with frames ``indices`` generated again; the others kept with their records.

    ``records`` is each existing frame's ``(attempt, seed)`` (as the sheet's Aseprite JSON
    recorded them; ``None``: a first generation, attempt 0 with the motion's seeds). A chosen
    frame uses ``attempt`` when given, else the one after its recorded attempt
    (:func:`next_attempts`), so regenerating twice gives two different frames."""
    bad = [i for i in indices if not 0 <= i < len(cells)]
    if bad:
        from service.core.errors import ParamsError  # noqa: PLC0415

        raise ParamsError(f"frame {bad[0] + 1} does not exist; the sheet has {len(cells)} "
                          "frames (numbered from 1)", code="frame_unknown")
    old = list(records) if records is not None else [
        (0, frame_seed(params.seed, i)) for i in range(len(cells))]
    chosen = next_attempts(old, indices, attempt)
    seeds = {i: frame_seed(params.seed, i, a) for i, a in chosen.items()}
    new = await generate(source, params, backend, edit_side=edit_side, indices=sorted(chosen),
                         seeds=seeds)
    out = [new.get(i, c) for i, c in enumerate(cells)]
    now = [(chosen[i], seeds[i]) if i in chosen else old[i] for i in range(len(cells))]
    return measured(source, params, out, [s for _, s in now], edit_side,
                    [a for a, _ in now])


def next_attempts(records: Sequence[tuple[int, int]], indices: Sequence[int],
                  attempt: int | None = None) -> dict[int, int]:
    """Frame -> the attempt a regeneration of it uses: ``attempt`` when given, else the one
    after the frame's recorded ``(attempt, seed)``."""
    return {i: attempt if attempt is not None else records[i][0] + 1 for i in indices}


def png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def outputs(anim: Animation, stem: str, res_dir: str = "res://") -> dict[str, bytes]:
    """File name -> bytes: ``<stem>.png`` sheet, ``.json`` (Aseprite), ``.tres`` (Godot
    SpriteFrames loading the sheet from ``res_dir``), ``.webp`` animated preview."""
    p = anim.params
    sheet, rects = fr.assemble(anim.frames, p.layout)
    size = (sheet.shape[1], sheet.shape[0])
    name, fps, loop = p.animation_name(), p.cycle_fps(), p.loops()
    res_path = res_dir.rstrip("/") + "/" + f"{stem}.png" if res_dir != "res://" else \
        f"res://{stem}.png"
    return {
        f"{stem}.png": png(sheet),
        f"{stem}.json": aseprite_json(f"{stem}.png", size, rects, name=name, fps=fps,
                                      loop=loop, records=anim.records()).encode(),
        f"{stem}.tres": godot_sprite_frames(res_path, rects, name=name, fps=fps,
                                            loop=loop).encode(),
        f"{stem}.webp": fr.encode_preview(anim.frames, fps, "webp", loop=loop),
    }


def outputs_at(anim: Animation, sheet_rel: str) -> dict[str, bytes]:
    """:func:`outputs` for a sheet delivered at ``sheet_rel`` (repo-relative, from
    :func:`service.core.naming.animation_results`): its stem, the ``.tres`` loading the sheet
    from its folder."""
    rel = PurePosixPath(sheet_rel)
    folder = rel.parent.as_posix()
    res_dir = "res://" + (folder + "/" if folder != "." else "")
    return outputs(anim, rel.stem, res_dir=res_dir)
