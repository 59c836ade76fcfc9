"""Weight manifests: which Hugging Face files a worker image bakes in, and where they live.

A :class:`Component` names a repository, a revision, the files to fetch and the folder under
the weights root (``$AAT_WEIGHTS_DIR``, default ``/models``) where the image keeps them. Each
worker's ``weights.py`` holds its manifest; the worker's ``pipeline.py`` reads the same
manifest to find the files, so what is baked and what is loaded cannot drift apart.
Where a file's sha256 is known it is part of the manifest and checked after download.
``download`` runs at image build time only (``python -m workers.<worker>.weights``) and writes
``<root>/manifest.lock.json`` with the resolved commit and the sha256 of every file.

Weights are baked by content, not by name:

- a revision must be a 40-hex commit; a branch name (``main``) stops the build with the commit
  it points at today, to pin (``AAT_ALLOW_UNPINNED=1`` resolves it and goes on, for trying a
  new model out, never for a release image);
- every file the manifest names must be there after download (an exact path must exist and be
  non-empty, a glob must match at least one file): a missing file stops the build instead of
  the container dying at start;
- gated repositories take a token from ``HF_TOKEN`` or the BuildKit secret file
  ``/run/secrets/hf_token`` (``docker build --secret id=hf_token,env=HF_TOKEN``), which never
  lands in a layer.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/models"
SECRET_FILE = Path("/run/secrets/hf_token")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Component:
    repo: str
    revision: str
    files: tuple[str, ...]  # required: exact paths, or globs that must match at least one file
    folder: str  # folder under the weights root
    sha256: tuple[tuple[str, str], ...] = ()  # (file, expected sha256) checked after download
    extras: tuple[str, ...] = ()  # globs fetched when present (chat templates, ...)


def weights_root() -> Path:
    return Path(os.environ.get("AAT_WEIGHTS_DIR", DEFAULT_ROOT))


def local_path(manifest: dict[str, Component], name: str, root: Path | None = None) -> Path:
    return (root or weights_root()) / manifest[name].folder


def download(manifest: dict[str, Component], root: Path | None = None) -> Path:
    """Fetch every component (build time), check it, then write the lock file with hashes."""
    from huggingface_hub import HfApi, snapshot_download  # only needed while building

    root = root or weights_root()
    token = hub_token()
    lock: dict[str, dict[str, object]] = {}
    for name, comp in manifest.items():
        target = root / comp.folder
        commit = comp.revision
        if not is_commit(commit):
            commit = HfApi(token=token).model_info(comp.repo, revision=comp.revision).sha or ""
            check_pinned(name, comp, commit)
        log.info("fetching %s from %s@%s", name, comp.repo, commit)
        snapshot_download(repo_id=comp.repo, revision=commit, allow_patterns=[*comp.files, *comp.extras],
                          local_dir=str(target), token=token)
        lock[name] = {**asdict(comp), "commit": commit, "sha256": verify(name, comp, target)}
    out = root / "manifest.lock.json"
    out.write_text(json.dumps(lock, indent=2, sort_keys=True))
    return out


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


def check_pinned(name: str, comp: Component, commit: str) -> None:
    """Refuse a branch revision (what it points at changes under the image) unless allowed."""
    if os.environ.get("AAT_ALLOW_UNPINNED") == "1":
        log.warning("%s: revision %r is a branch, resolved to %s (AAT_ALLOW_UNPINNED=1)",
                    name, comp.revision, commit)
        return
    raise SystemExit(
        f"{name}: revision {comp.revision!r} of {comp.repo} is a branch, not a commit; pin it "
        f"(today it is {commit or 'unknown'}) or build with AAT_ALLOW_UNPINNED=1 to try it")


def verify(name: str, comp: Component, target: Path) -> dict[str, str]:
    """The sha256 of every downloaded file, after checking each named file is there."""
    files = sorted(p for p in target.rglob("*") if p.is_file() and ".cache" not in p.parts)
    rel = {str(p.relative_to(target)): p for p in files}
    for pattern in comp.files:
        if any(ch in pattern for ch in "*?["):
            if not fnmatch.filter(rel, pattern):
                raise SystemExit(f"{name}: nothing in {comp.repo}@{comp.revision} matches "
                                 f"{pattern!r}; refusing to bake an incomplete model")
        elif pattern not in rel or rel[pattern].stat().st_size == 0:
            raise SystemExit(f"{name}: {pattern} is missing from {comp.repo}@{comp.revision} "
                             "(or empty); refusing to bake an incomplete model")
    hashes = {key: _sha256(path) for key, path in rel.items()}
    for file, expected in comp.sha256:
        if hashes.get(file) != expected:
            raise SystemExit(f"{name}: {file} from {comp.repo} has sha256 {hashes.get(file)}, "
                             f"expected {expected}; refusing to bake it")
    return hashes


def hub_token() -> str | None:
    """A Hugging Face token for gated repositories: ``HF_TOKEN`` or the build secret file."""
    token = os.environ.get("HF_TOKEN")
    if not token and SECRET_FILE.is_file():
        token = SECRET_FILE.read_text().strip()
    return token or None


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
