"""Delivery of a job's result into a game repository.

Repos are named in settings (``AAT_REPOS='{"game": "/path"}'`` or ``aat.toml``); a job's target
is a repo name and the source's path inside it (``TargetSpec``). Where the result goes
(``suffix``/``replace``/``mirror``, confinement to the repo root, no sidecar, nothing under
``.git``) is :mod:`service.core.naming`, the rule the watcher predicts with too. Writes are
atomic (:mod:`service.core.atomic`), skipped when the bytes are already identical. A file
there that this service did not write is never overwritten (``delivery_conflict``) unless it
is the job's own input (``replace``) or ``force`` is set; a git commit is optional.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.core.atomic import atomic_write, atomic_write_set
from service.core.errors import DeliveryError, PathError
from service.core.jobs import TargetSpec
from service.core.naming import confine, relative, result_path
from service.settings import Settings
from service.storage.sidecars import Writeback, write_sidecars

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Delivery:
    path: Path  # absolute
    rel: str  # relative to the repo root, posix style
    written: bool  # False when identical bytes were already there
    commit: str | None = None
    sidecars: Writeback | None = None  # engine metadata carried over (see storage.sidecars)


@dataclass(frozen=True)
class SidecarSpec:
    """How the source's engine metadata is carried over: the upscale factor, the result's
    longest side and whether sprites keep their size in the game (Unity pixels-per-unit)."""

    factor: float
    max_side: int
    keep_game_size: bool = True


def resolve_target(settings: Settings, target: TargetSpec, *, ext: str, label: str = "_x2"
                   ) -> tuple[Path, Path]:
    """``(repo_root, destination)`` for ``target``; raises PathError/ParamsError when refused."""
    root = settings.repos.get(target.repo)
    if root is None:
        names = ", ".join(sorted(settings.repos)) or "none configured"
        raise PathError(f"unknown repo {target.repo!r} (known: {names}); add it to AAT_REPOS",
                        code="path_not_found")
    dest_rel = result_path(target.path, target.naming, ext=ext, tag=label,
                           mirror_dir=target.mirror_dir)
    dest = confine(Path(root), dest_rel, repo=target.repo)
    return Path(root).resolve(), dest


def sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def deliver(settings: Settings, target: TargetSpec, data: bytes, *, ext: str, label: str,
            job_id: str, last_delivered: Callable[[str], str | None] | None = None,
            input_sha256: str | None = None, sidecars: SidecarSpec | None = None) -> Delivery:
    """Write ``data`` to the target atomically; identical bytes are left alone (no mtime bump).

    With ``sidecars`` the source's Unity ``.meta`` and sheet JSON are carried over to the result
    scaled, after the image, and Git LFS routing is reported (:mod:`service.storage.sidecars`).

    ``last_delivered(rel)`` gives the sha256 this service last wrote there. With it, a file
    already at the result path is not overwritten (``delivery_conflict``) when it changed since
    our delivery (someone edited it) or, in ``suffix`` and ``mirror`` naming, when we never
    delivered it (an artist's own ``rock_x2.png``); unless it holds the job's own input
    (``input_sha256``: ``replace`` naming upscales an edited file in place) or the target says
    ``overwrite``."""
    root, dest = resolve_target(settings, target, ext=ext, label=label)
    rel = dest.relative_to(root).as_posix()
    if dest.is_dir():
        raise DeliveryError(f"{rel} in repo {target.repo!r} is a folder; rename the folder or "
                            "choose another target path", code="delivery_failed",
                            retryable=False)
    current = sha256_file(dest)
    if current == hashlib.sha256(data).hexdigest():
        log.info("job %s: %s already holds these bytes; not rewritten", job_id, rel)
        return Delivery(dest, rel, written=False)
    if current is not None and current != input_sha256 and last_delivered is not None \
            and not target.overwrite:
        _refuse_foreign(target, rel, current, last_delivered(rel))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        confine(root, PurePosixPath(rel), repo=target.repo)  # a link made since the check
        atomic_write(dest, data)
    except OSError as exc:
        raise DeliveryError(f"could not write {rel} into repo {target.repo!r}: {exc.strerror or exc}"
                            "; check permissions and free space") from exc
    extra: Writeback | None = None
    if sidecars is not None:
        try:
            extra = write_sidecars(root, relative(target.path).as_posix(), rel,
                                   factor=sidecars.factor, max_side=sidecars.max_side,
                                   keep_game_size=sidecars.keep_game_size)
        except OSError as exc:
            raise DeliveryError(f"{rel} was written but its engine metadata could not be: "
                                f"{exc.strerror or exc}; check permissions") from exc
    files = [rel, *(extra.written if extra else [])]
    commit = _git_commit(root, files, job_id) if settings.git_commit else None
    log.info("job %s delivered %s", job_id, ", ".join(files))
    return Delivery(dest, rel, written=True, commit=commit, sidecars=extra)


def deliver_set(settings: Settings, target: TargetSpec, files: dict[str, bytes], *,
                label: str, job_id: str,
                last_delivered: Callable[[str], str | None] | None = None) -> list[Delivery]:
    """Several results of one job beside the source (``{ext: bytes}``, e.g. an animation's
    sheet, its Aseprite JSON, Godot ``.tres`` and preview): every destination is resolved and
    checked before the first is written, then each is written atomically, image first. With
    ``last_delivered`` a file that is not our last delivery there is kept, as by
    :func:`deliver`, and nothing of the set is written."""
    dests = {ext: resolve_target(settings, target, ext=ext, label=label) for ext in files}
    for ext, (root, dest) in dests.items():
        rel = dest.relative_to(root).as_posix()
        if dest.is_dir():
            raise DeliveryError(f"{rel} in repo {target.repo!r} is a folder; choose another "
                                "target path", code="delivery_failed", retryable=False)
        current = sha256_file(dest)
        if current is not None and last_delivered is not None and not target.overwrite \
                and current != hashlib.sha256(files[ext]).hexdigest():
            _refuse_foreign(target, rel, current, last_delivered(rel))
    out, changed = [], []
    for ext, data in files.items():
        root, dest = dests[ext]
        rel = dest.relative_to(root).as_posix()
        same = sha256_file(dest) == hashlib.sha256(data).hexdigest()
        out.append(Delivery(dest, rel, written=not same))
        if same:
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"could not create the folder of {rel} in repo "
                                f"{target.repo!r}: {exc.strerror or exc}") from exc
        confine(root, PurePosixPath(rel), repo=target.repo)  # a link made since the check
        changed.append((dest, data))
    try:  # staged together: a full disk leaves every file of the set as it was
        atomic_write_set(changed)
    except OSError as exc:
        raise DeliveryError(f"could not write {len(changed)} file(s) of the set into repo "
                            f"{target.repo!r}: {exc.strerror or exc}; check permissions and "
                            "free space; nothing of the set was changed") from exc
    written = [d.rel for d in out if d.written]
    if written and settings.git_commit:
        commit = _git_commit(dests[next(iter(files))][0], written, job_id)
        out = [Delivery(d.path, d.rel, d.written, commit) for d in out]
    log.info("job %s delivered %s", job_id, ", ".join(d.rel for d in out))
    return out


def _refuse_foreign(target: TargetSpec, rel: str, current: str, previous: str | None) -> None:
    """Refuse to overwrite a file at ``rel`` that is not our last delivery there."""
    force = ("move it away (or delete it) and run the job again, or submit with "
             "target overwrite=true to replace it")
    if previous is not None and current != previous:
        raise DeliveryError(f"{rel} was edited after it was delivered; {force}",
                            code="delivery_conflict", retryable=False)
    if previous is None and target.naming != "replace":
        raise DeliveryError(f"{rel} already exists in repo {target.repo!r} and was not written "
                            f"by AI Assets Toolbox; {force}", code="delivery_conflict",
                            retryable=False)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _git_commit(root: Path, files: list[str], job_id: str) -> str | None:
    """Commit the delivered files alone (the image first, then its sidecars), with a
    ``Pipeline-Job`` trailer; None if not a repo."""
    if _git(root, "rev-parse", "--is-inside-work-tree").returncode != 0:
        log.warning("repo %s is not a git work tree; result not committed", root)
        return None
    for _ in range(50):  # never race an artist's git holding index.lock
        if not (root / ".git" / "index.lock").exists():
            break
        time.sleep(0.2)
    rel = files[0]
    added = _git(root, "add", "--", *files)
    done = _git(root, "commit", "--only", "-m", f"aat: upscale {rel}", "-m",
                f"Pipeline-Job: {job_id}", "--", *files)
    if added.returncode or done.returncode:
        raise DeliveryError(f"the file was written but git commit failed: "
                            f"{(added.stderr or done.stderr or done.stdout).strip()[:200]}")
    return _git(root, "rev-parse", "HEAD").stdout.strip() or None
