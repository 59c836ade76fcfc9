"""`JobService`: the one entry point for submitting, reading, canceling and re-running jobs.

The REST API, the CLI and the watcher call this; it validates input before storing anything,
stores inputs content-addressed, writes the job row (deduplicated by input + params + pipeline
version + target, or by an idempotency key) and hands the job id to the executor (Celery or the
embedded executor), which runs ``service.jobs.orchestrator.run_job``.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.core import formats
from service.core.animate import AnimateParams
from service.core.errors import JobError, NotFound, ParamsError, PathError
from service.core.imaging import load_image
from service.core.jobs import PIPELINE_VERSION, JobPublic, JobStatus, TargetSpec
from service.core.naming import (
    ANIMATION_SUFFIXES,
    animation_results,
    animation_tag,
    confine_file,
)
from service.core.params import UpscaleParams
from service.jobs.animation import frame_plan, frame_requests
from service.jobs.executor import Executor
from service.jobs.intake import probe_image
from service.jobs.view import to_public
from service.settings import Settings
from service.storage.artifacts import ArtifactStore, sha256_bytes
from service.storage.game_repo import resolve_target
from service.storage.job_store import SqlJobStore
from service.storage.records import (
    JobRecord,
    NewJob,
    NewTile,
    TileRecord,
    held_result,
)
from service.storage.sidecars import sheet_beside
from service.storage.stores import open_artifacts, probe_artifacts

log = logging.getLogger(__name__)


def new_job_id() -> str:
    """Time-ordered id (sorts by creation): ``j_`` + 12 hex of ms + 12 random hex."""
    return f"j_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def dedupe_key(input_sha256: str, params: UpscaleParams, target: TargetSpec | None,
               backend: str | None) -> str:
    """The same input, resolved params (no ``auto`` left), pipeline version, target and GPU
    backend make the same job."""
    parts = [input_sha256, params.canonical_json(), PIPELINE_VERSION,
             target.model_dump_json() if target else "", backend or ""]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def animate_dedupe_key(input_sha256: str, params: AnimateParams, target: TargetSpec | None
                       ) -> str:
    """The same sprite, animate params and target make the same animate job."""
    parts = ["animate", input_sha256, params.model_dump_json(), PIPELINE_VERSION,
             target.model_dump_json() if target else ""]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class JobService:
    """Jobs over a store, an artifact store and an executor (see module docstring)."""

    def __init__(self, settings: Settings, store: SqlJobStore, artifacts: ArtifactStore,
                 executor: Executor) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.executor = executor

    def start(self) -> None:
        self.executor.start()

    def stop(self) -> None:
        self.executor.stop()

    # ---- submission --------------------------------------------------------------------------
    def submit(self, data: bytes, *, filename: str, params: UpscaleParams,
               target: TargetSpec | None = None, idempotency_key: str | None = None,
               decided: UpscaleParams | None = None, retry_of: str | None = None
               ) -> tuple[JobPublic, bool]:
        """Validate, store and queue one job; ``(job, False)`` when it already existed.
        ``decided``: the stored params of the job this one retries (:meth:`retry`, which
        passes that job's id as ``retry_of``): its asset type was decided then, and the new
        job gives the same reason for it."""
        if target is not None and params.sheet is None:
            params = self._sheet_beside(target, params)
        info = probe_image(data, params, self.settings, filename)  # raises ImageError/ParamsError
        params = info.params  # every `auto` resolved here, stored, and part of the dedupe key
        if decided is not None and decided.asset_type == params.asset_type:
            # sent back in as a concrete type it would read "user: asked for ..."
            params = params.model_copy(update={"asset_reason": decided.asset_reason})
        if params.style_image_sha256 and not self.artifacts.find(
                "inputs", params.style_image_sha256):
            raise ParamsError(f"no style image {params.style_image_sha256[:12]}…; upload it "
                              "first (JobService.add_style_image / the API's style upload)")
        if target is not None:
            resolve_target(self.settings, target, ext=info.output_ext)  # raises PathError
        key = dedupe_key(sha256_bytes(data), params, target, info.backend)
        if idempotency_key:
            self._refuse_key_reuse(idempotency_key, key)
        input_sha = self.artifacts.put_bytes("inputs", data, info.ext)
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        row, created = self.store.insert(NewJob(
            id=new_job_id(), filename=Path(filename).name[:255] or "image",
            input_sha256=input_sha, input_ext=info.ext, input_width=info.width,
            input_height=info.height, input_format=info.format,
            params=params.model_dump(mode="json"), seed=seed,
            target=target.model_dump(mode="json") if target else None,
            dedupe_key=key, idempotency_key=idempotency_key, backend=info.backend,
            queue=self.executor.queue, retry_of=retry_of))
        if created:
            log.info("job %s queued (%s, %dx%d)", row.id, row.filename, info.width, info.height)
            self._dispatch(row.id)
        return to_public(row), created

    def submit_animation(self, data: bytes, *, filename: str, params: AnimateParams,
                         target: TargetSpec | None = None, idempotency_key: str | None = None,
                         retry_of: str | None = None) -> tuple[JobPublic, bool]:
        """Validate, store and queue one ``animate`` job (a sprite into a spritesheet, see
        :mod:`service.jobs.animation`); ``(job, False)`` when it already existed.
        ``retry_of``: the job this one submits again (:meth:`retry`)."""
        loaded = load_image(data, limits=self.settings.image_limits(), filename=filename)
        if target is not None:  # every file of the set must have a place before we queue
            animation_results(target.path, target.naming, params,
                              mirror_dir=target.mirror_dir)  # refuses replace naming
            for ext in ANIMATION_SUFFIXES:
                resolve_target(self.settings, target, ext=ext,
                               label=animation_tag(params))  # raises PathError
        key = animate_dedupe_key(sha256_bytes(data), params, target)
        if idempotency_key:
            self._refuse_key_reuse(idempotency_key, key)
        ext = formats.input_suffix(loaded.format)
        input_sha = self.artifacts.put_bytes("inputs", data, ext)
        height, width = loaded.rgb.shape[:2]
        row, created = self.store.insert(NewJob(
            id=new_job_id(), filename=Path(filename).name[:255] or "sprite.png",
            input_sha256=input_sha, input_ext=ext, input_width=width, input_height=height,
            input_format=loaded.format, params=params.model_dump(mode="json"),
            seed=params.seed, target=target.model_dump(mode="json") if target else None,
            dedupe_key=key, idempotency_key=idempotency_key, backend="animate",
            queue=self.executor.queue, kind="animate", retry_of=retry_of))
        if created:
            log.info("animate job %s queued (%s, %s x%d)", row.id, row.filename, params.motion,
                     params.frames)
            self._dispatch(row.id)
        return to_public(row), created

    def _sheet_beside(self, target: TargetSpec, params: UpscaleParams) -> UpscaleParams:
        """A source in a repo with sheet metadata beside it (``hero.json`` from Aseprite or
        TexturePacker, or a Unity ``.meta`` with several sprites) is processed cell by cell."""
        root = self.settings.repos.get(target.repo)
        if root is None:
            return params
        found = sheet_beside(Path(root), target.path)
        return params if found is None else params.model_copy(update={"sheet": found})

    def _refuse_key_reuse(self, idempotency_key: str, key: str) -> None:
        """Same ``Idempotency-Key`` with another image, params or target: refused (422, as the
        IETF Idempotency-Key draft asks), never answered with the other request's job."""
        row = self.store.by_idempotency_key(idempotency_key)
        if row is None:
            return
        target = TargetSpec.model_validate(row.target) if row.target else None
        if row.kind == "animate":
            was = animate_dedupe_key(row.input_sha256, AnimateParams.model_validate(row.params),
                                     target)
        else:
            was = dedupe_key(row.input_sha256, UpscaleParams.model_validate(row.params), target,
                             row.backend)
        if was != key:
            raise ParamsError(f"Idempotency-Key {idempotency_key!r} was already used for another "
                              f"image or other parameters (job {row.id}); send a new key",
                              code="idempotency_key_reused")

    def add_style_image(self, data: bytes) -> str:
        """Store an IP-Adapter style image; returns the sha256 to put in
        ``UpscaleParams.style_image_sha256``."""
        loaded = load_image(data, limits=self.settings.image_limits())
        return self.artifacts.put_bytes("inputs", data, formats.input_suffix(loaded.format))

    def submit_path(self, path: Path, *, filename: str | None = None, params: UpscaleParams,
                    target: TargetSpec | None = None, idempotency_key: str | None = None
                    ) -> tuple[JobPublic, bool]:
        """Submit a file that lies inside an intake root or a configured repo."""
        real = confine_file(path, self.settings.intake_folders())
        try:
            data = real.read_bytes()
        except OSError as exc:  # a name too long for the disk, no permission, ...
            raise PathError(f"cannot read {path} ({exc.strerror or exc}); check the path",
                            code="path_not_found") from exc
        return self.submit(data, filename=filename or real.name, params=params,
                           target=target, idempotency_key=idempotency_key)

    # ---- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> JobPublic:
        return to_public(self.store.get(job_id))

    def list(self, *, status: JobStatus | None = None, limit: int = 50,
             cursor: str | None = None) -> tuple[builtins.list[JobPublic], str | None]:
        rows, next_cursor = self.store.list(status=status, limit=max(1, min(limit, 500)),
                                            cursor=cursor)
        return [to_public(r) for r in rows], next_cursor

    def result(self, job_id: str) -> tuple[Path, str]:
        row = self.store.get(job_id)
        if row.status != JobStatus.succeeded or not row.output_sha256 or not row.output_ext:
            raise JobError(f"job {job_id} is {row.status.value}; the result exists once it "
                           "has succeeded", code="not_ready")
        path = self.artifacts.local_file("outputs", row.output_sha256, row.output_ext)
        if path is None:
            raise NotFound(f"the result of job {job_id} was garbage-collected; submit it again")
        return path, formats.media_type_for_suffix(row.output_ext)

    def companion(self, job_id: str, name: str) -> Path:
        """One of a succeeded animate job's companion files (``output.files``) by name."""
        row = self.store.get(job_id)
        files = (row.output or {}).get("files") or {}
        if row.status != JobStatus.succeeded or name not in files:
            raise NotFound(f"job {job_id} has no file {name[:80]!r}; its files are listed in "
                           "output.files once it has succeeded")
        path = self.artifacts.local_file("outputs", files[name], Path(name).suffix)
        if path is None:
            raise NotFound(f"{name} of job {job_id} was garbage-collected; submit it again")
        return path

    def input_path(self, job_id: str) -> Path:
        """The stored input file of a job (for previews)."""
        row = self.store.get(job_id)
        path = self.artifacts.find("inputs", row.input_sha256)
        if path is None:
            raise NotFound(f"the input of job {job_id} was garbage-collected; submit it again")
        return path

    def wait_for_change(self, job_id: str, version: int | None, timeout: float
                        ) -> tuple[JobPublic, int]:
        """Block until the row's version differs from ``version`` (or ``timeout`` passes)."""
        deadline = time.monotonic() + max(0.0, timeout)
        current = self.store.version(job_id)
        while current == version and time.monotonic() < deadline:
            time.sleep(0.1)
            current = self.store.version(job_id)
        row = self.store.get(job_id)
        return to_public(row), int(row.version)

    # ---- control -----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobPublic:
        """Queued jobs end canceled at once; running jobs stop at the next tile."""
        row = self.store.request_cancel(job_id)
        self.executor.cancel(job_id)
        return to_public(row)

    def tiles(self, job_id: str) -> builtins.list[dict[str, Any]]:
        self.store.get(job_id)
        return [_tile_view(t) for t in self.store.get_tiles(job_id)]

    def set_tile_prompt(self, job_id: str, n: int, prompt: str) -> dict[str, Any]:
        self.store.get(job_id)
        return _tile_view(self.store.update_tile(job_id, n, prompt=prompt[:4000]))

    def rerun(self, job_id: str, tiles: builtins.list[int]) -> JobPublic:
        """A new job from the same input and tile plan: the chosen tiles are refined again
        (with a fresh seed and their current prompt), the others keep the result they hold,
        from the cache (a prompt edited on a tile not chosen waits until it is chosen). For an
        animate job the tiles are its frames: the chosen frames are generated again with new
        seeds, the others come from the cache, so only their cells of the sheet change."""
        row = self.store.get(job_id)
        if not row.status.terminal:
            raise JobError(f"job {job_id} is {row.status.value}; re-run it once it has finished",
                           code="not_ready")
        plan = self.store.get_tiles(job_id)
        known = {t.idx for t in plan}
        missing = sorted(set(tiles) - known)
        if row.kind == "animate":
            frames = AnimateParams.model_validate(row.params).frames
            bad = sorted(i for i in set(tiles) if not 0 <= i < frames)
            if bad:
                raise ParamsError(f"job {job_id} has no frame(s) {bad}; its {frames} frames are "
                                  f"numbered 0 to {frames - 1}", code="frame_unknown")
        elif not plan or missing:
            raise NotFound(f"job {job_id} has no tile(s) {missing or tiles}; see GET .../tiles")
        chosen = set(tiles)
        new_plan = [NewTile(t.idx, t.x, t.y, t.w, t.h, caption=t.caption, prompt=t.prompt,
                            rerun=t.rerun + (1 if t.idx in chosen else 0)) for t in plan]
        # a tile or frame not chosen keeps the result it holds (its key and seed), even when
        # its prompt was edited since: the edited prompt waits until it is chosen
        held = {t.idx: result for t in plan
                if t.idx not in chosen and (result := held_result(t)) is not None}
        if row.kind == "animate":
            params = AnimateParams.model_validate(row.params)
            if not plan:  # a job that failed before it wrote its frames: plan them here
                new_plan = frame_plan(params, (row.input_width, row.input_height),
                                      rerun=chosen)
            # a frame an earlier attempt cached but never recorded (its row holds nothing) is
            # found by its request
            requests = {**frame_requests(self.settings, row.input_sha256, params, new_plan),
                        **held}
        else:
            requests = held
        return self._rerun_new(row, kept_rows(self.artifacts, new_plan, requests))

    def retry(self, job_id: str, *, idempotency_key: str | None = None
              ) -> tuple[JobPublic, bool]:
        """A failed or canceled job submitted again as a new job: the same input bytes, kind,
        parameters (with the seed it ran with, so a canceled job's finished tiles or frames
        come from the cache) and target, through the kind's submit (so everything is checked
        again and the dedupe and ``Idempotency-Key`` rules are the submit's: retrying twice
        answers the first retry's job while it has not failed). An upscale job keeps the
        original's asset type and the reason it was chosen (``asset_reason``). The new job
        names this one in ``retry_of`` (a job the dedupe rule answers instead keeps its own
        origin: this retry did not make it)."""
        row = self.store.get(job_id)
        if row.status == JobStatus.succeeded:
            raise JobError(f"job {job_id} succeeded; nothing to retry (re-run chosen "
                           "tiles or frames with POST .../rerun, or submit with other "
                           "parameters)", code="job_succeeded")
        if not row.status.terminal:
            raise JobError(f"job {job_id} is {row.status.value}; retry it once it has failed "
                           "or been canceled", code="not_ready")
        try:
            data = self.artifacts.get_bytes("inputs", row.input_sha256, row.input_ext)
        except FileNotFoundError:
            raise NotFound(f"the input of job {job_id} was garbage-collected; submit the file "
                           "again") from None
        target = TargetSpec.model_validate(row.target) if row.target else None
        if row.kind == "animate":
            return self.submit_animation(
                data, filename=row.filename, params=AnimateParams.model_validate(row.params),
                target=target, idempotency_key=idempotency_key, retry_of=row.id)
        params = UpscaleParams.model_validate(row.params)
        if params.seed is None and row.seed is not None:
            params = params.model_copy(update={"seed": row.seed})
        return self.submit(data, filename=row.filename, params=params, target=target,
                           idempotency_key=idempotency_key, decided=params, retry_of=row.id)

    def _rerun_new(self, row: JobRecord, plan: builtins.list[NewTile]) -> JobPublic:
        """The re-run job of ``row`` with tile rows ``plan``, queued (job and rows are written
        together: a runner never finds the job without its rows); it names ``row`` in
        ``rerun_of``."""
        new_row, _ = self.store.insert(NewJob(
            id=new_job_id(), filename=row.filename, input_sha256=row.input_sha256,
            input_ext=row.input_ext, input_width=row.input_width, input_height=row.input_height,
            input_format=row.input_format, params=row.params, seed=row.seed, target=row.target,
            backend=row.backend, queue=self.executor.queue, kind=row.kind, rerun_of=row.id),
            plan)
        self._dispatch(new_row.id)
        return to_public(new_row)

    def _dispatch(self, job_id: str) -> None:
        """Hand the id to the executor; if the broker is down the job stays queued in the
        store and a runner sends it again when it starts (nothing is lost)."""
        try:
            self.executor.submit(job_id)
        except Exception:
            log.warning("job %s is stored but could not be queued now; a runner will pick it "
                        "up when it starts", job_id, exc_info=True)

    def ready(self) -> dict[str, bool]:
        return {"store": self.store.ping(), "broker": self.executor.ready()}

    def checks(self) -> dict[str, tuple[bool, str]]:
        """The job runners (alive; how many jobs they run, their last heartbeat) and the
        artifact store (a write read back), each as (ok, words)."""
        ok, runners = self.executor.runners()
        ends = self.store.lease_ends(queue=self.executor.queue)
        if ends:
            beat = self.store.clock() - (ends[0] - self.settings.lease_s)
            runners += (f"; {len(ends)} job{'s' if len(ends) != 1 else ''} running, last "
                        f"heartbeat {max(beat, 0):.1f} s ago")
        return {"runners": (ok, runners), "artifacts": probe_artifacts(self.settings,
                                                                       self.artifacts)}


def kept_rows(artifacts: ArtifactStore, plan: builtins.list[NewTile],
              requests: Mapping[int, tuple[str, int]]) -> builtins.list[NewTile]:
    """A rerun's tile or frame rows: each one whose result the runner will take from the cache
    (its request, ``requests[idx]`` = (cache key, seed), is cached) is written ``cached`` (the
    state ``cached``: kept) with that seed and key from the moment the rerun exists, as the
    runner writes whatever it takes from the cache, so its state never moves (the studio
    showed kept tiles and frames queued, then done); the others (chosen, or their result gone
    from the cache) are pending."""
    out = []
    for t in plan:
        key, seed = requests.get(t.idx, (None, None))
        if key is not None and artifacts.find("refined", key) is not None:
            t = dataclasses.replace(t, status="cached", seed=seed, cache_key=key)
        out.append(t)
    return out


def _tile_view(t: TileRecord) -> dict[str, Any]:
    return {"index": t.idx, "x": t.x, "y": t.y, "w": t.w, "h": t.h,
            "caption": t.caption, "prompt": t.prompt, "status": t.status, "seed": t.seed,
            "timings": t.timings or {}}


def build_job_service(settings: Settings) -> JobService:
    """Store + artifacts + executor (Celery when ``AAT_BROKER_URL`` is set, else embedded).
    Call ``start()`` to begin running jobs and ``stop()`` at shutdown."""
    from service.jobs.executor import make_executor

    store = SqlJobStore(settings.effective_database_url)
    artifacts = open_artifacts(settings)
    return JobService(settings, store, artifacts, make_executor(settings, store, artifacts))
