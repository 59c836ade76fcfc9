"""Weight manifests: which Hugging Face files a worker image bakes in, and where they live.

A :class:`Component` names a repository, a revision, the files to fetch and the folder under
the weights root (``$AAT_WEIGHTS_DIR``, default ``/models``) where the image keeps them. Each
worker's ``weights.py`` holds its manifest; the worker's ``pipeline.py`` reads the same
manifest to find the files, so what is baked and what is loaded cannot drift apart.
Where a file's sha256 is known it is part of the manifest and checked after download.
``download`` runs at image build time only (``python -m workers.<worker>.weights``) and writes
``<root>/manifest.lock.json`` with the resolved commit and the sha256 of every file; a
revision that is a branch name is resolved to its commit first (and the build log says which
commit to pin), so one build always downloads one consistent snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/models"


@dataclass(frozen=True)
class Component:
    repo: str
    revision: str
    files: tuple[str, ...]  # exact paths or glob patterns inside the repository
    folder: str  # folder under the weights root
    sha256: tuple[tuple[str, str], ...] = ()  # (file, expected sha256) checked after download


def weights_root() -> Path:
    return Path(os.environ.get("AAT_WEIGHTS_DIR", DEFAULT_ROOT))


def local_path(manifest: dict[str, Component], name: str, root: Path | None = None) -> Path:
    return (root or weights_root()) / manifest[name].folder


def download(manifest: dict[str, Component], root: Path | None = None) -> Path:
    """Fetch every component (build time), then write the lock file with file hashes."""
    from huggingface_hub import HfApi, snapshot_download  # only needed while building

    root = root or weights_root()
    lock: dict[str, dict[str, object]] = {}
    for name, comp in manifest.items():
        target = root / comp.folder
        commit = HfApi().model_info(comp.repo, revision=comp.revision).sha or comp.revision
        if commit != comp.revision:
            log.warning("%s: revision %r is a branch; pin it to commit %s in the manifest",
                        name, comp.revision, commit)
        log.info("fetching %s from %s@%s", name, comp.repo, commit)
        snapshot_download(repo_id=comp.repo, revision=commit,
                          allow_patterns=list(comp.files), local_dir=str(target))
        files = sorted(p for p in target.rglob("*") if p.is_file() and ".cache" not in p.parts)
        if not files:
            raise SystemExit(f"{name}: nothing downloaded from {comp.repo}@{commit}")
        hashes = {str(p.relative_to(target)): _sha256(p) for p in files}
        for file, expected in comp.sha256:
            if hashes.get(file) != expected:
                raise SystemExit(f"{name}: {file} from {comp.repo}@{commit} has sha256 "
                                 f"{hashes.get(file)}, expected {expected}; refusing to bake it")
        lock[name] = {**asdict(comp), "commit": commit, "sha256": hashes}
    out = root / "manifest.lock.json"
    out.write_text(json.dumps(lock, indent=2, sort_keys=True))
    return out


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
