"""The worker images cannot be built here; check what can go wrong without building them.

Every COPY source exists in the build context (the repository root), base images and Python
packages are pinned, the image bakes weights with the worker's own ``weights.py``, the
manifest names exactly what ``pipeline.py`` loads, and the smoke-test inputs are valid requests.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest

from service.core.contracts import caption_worker_request, upscale_worker_request
from workers.caption import weights as caption_weights
from workers.upscale import weights as upscale_weights

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ["upscale", "caption", "animate"]


def dockerfile(worker: str) -> Path:
    """Everything that deploys lives under ``deploy/``; the build context is the repo root."""
    return ROOT / "deploy" / "docker" / f"worker-{worker}.Dockerfile"


def constraints() -> dict[str, str]:
    """The one version set of the worker images (name -> version)."""
    lines = (ROOT / "deploy/docker/worker-constraints.txt").read_text().splitlines()
    pins = [line for line in lines if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", p) for p in pins), pins
    return dict(p.split("==") for p in pins)


def requirement_names(worker: str) -> set[str]:
    lines = (ROOT / "workers" / worker / "requirements.txt").read_text().splitlines()
    names = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert all(re.fullmatch(r"[\w.-]+", n) for n in names), names  # versions live in one file
    return names


def instructions(worker: str) -> list[tuple[str, str]]:
    text = dockerfile(worker).read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("worker", WORKERS)
def test_every_copy_source_exists_in_the_build_context(worker: str) -> None:
    copies = [rest for op, rest in instructions(worker) if op == "COPY"]
    assert copies
    for rest in copies:
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"{dockerfile(worker).name} copies missing {src}"


@pytest.mark.parametrize("worker", WORKERS)
def test_base_image_and_packages_are_pinned(worker: str) -> None:
    froms = [rest for op, rest in instructions(worker) if op == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"[\w./-]+:\d[\w.-]*(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]
    pins = constraints()
    runpod = next(f"runpod=={v}" for n, v in pins.items() if n == "runpod")
    version = tuple(int(x) for x in runpod.split("==")[1].split(".")[:3])
    assert version >= (1, 10, 1)  # older SDKs funnel every job to one worker
    names = requirement_names(worker)
    assert "torch" not in names  # the CUDA base image brings torch
    assert names <= set(pins), names - set(pins)  # every package has its one pinned version
    install = next(rest for op, rest in instructions(worker)
                   if op == "RUN" and f"workers/{worker}/requirements.txt" in rest)
    assert "-c /app/constraints.txt" in install
    copies = [rest for op, rest in instructions(worker) if op == "COPY"]
    assert "deploy/docker/worker-constraints.txt /app/constraints.txt" in copies
    base_torch = re.match(r"pytorch/pytorch:([\d.]+)-", froms[0])
    assert base_torch and pins["torch"] == base_torch.group(1)  # the constraint names the real one


@pytest.mark.parametrize("worker", WORKERS)
def test_weights_are_baked_by_the_workers_manifest_before_the_code(worker: str) -> None:
    steps = instructions(worker)
    runs = [i for i, (op, rest) in enumerate(steps) if op == "RUN" and f"workers.{worker}.weights" in rest]
    assert len(runs) == 1
    code_copy = next(i for i, (op, rest) in enumerate(steps)
                     if op == "COPY" and rest.startswith(f"workers/{worker} "))
    assert runs[0] < code_copy  # a code change does not re-download gigabytes
    cmd = next(rest for op, rest in steps if op == "CMD")
    assert f"/app/workers/{worker}/handler.py" in cmd


def _string_keys(source: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, source))


def test_upscale_manifest_names_what_the_pipeline_loads() -> None:
    source = (ROOT / "workers/upscale/pipeline.py").read_text()
    used = _string_keys(source, r'paths\["(\w+)"\]')
    assert used == set(upscale_weights.MANIFEST)
    attrs = {n.attr for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id == "weights"}
    assert attrs and all(hasattr(upscale_weights, a) for a in attrs), attrs
    ip = upscale_weights.MANIFEST["ip_adapter"].files
    assert f"{upscale_weights.IP_ADAPTER_SUBFOLDER}/{upscale_weights.IP_ADAPTER_FILE}" in ip
    assert upscale_weights.BASE_FILE in upscale_weights.MANIFEST["base"].files
    pinned = [c for c in upscale_weights.MANIFEST.values()
              if re.fullmatch(r"[0-9a-f]{40}", c.revision)]
    assert {c.repo for c in pinned} >= {"madebyollin/sdxl-vae-fp16-fix", "h94/IP-Adapter",
                                        "stabilityai/stable-diffusion-xl-base-1.0"}


def test_caption_manifest_names_what_the_pipeline_loads() -> None:
    source = (ROOT / "workers/caption/pipeline.py").read_text()
    assert _string_keys(source, r'weights\.local_path\("(\w+)"') == set(caption_weights.MANIFEST)
    assert caption_weights.MANIFEST["caption"].repo == caption_weights.DEFAULT_MODEL


def test_smoke_test_inputs_are_valid_requests() -> None:
    up = json.loads((ROOT / "workers/upscale/test_input.json").read_text())["input"]
    cap = json.loads((ROOT / "workers/caption/test_input.json").read_text())["input"]
    assert upscale_worker_request.validate_python(up).action == "upscale"
    assert caption_worker_request.validate_python(cap).action == "caption"


def test_weight_download_resolves_branches_and_locks_file_hashes(tmp_path, monkeypatch, caplog
                                                                  ) -> None:
    # the Hugging Face Hub is unreachable here: stand in for its two calls (the only fake)
    import hashlib
    import types

    import huggingface_hub

    from workers.common.hub import Component, download

    fetched: list[tuple[str, str]] = []

    def snapshot_download(repo_id: str, revision: str, allow_patterns: list[str],
                          local_dir: str, token: str | None) -> str:
        fetched.append((repo_id, revision))
        Path(local_dir, "sub").mkdir(parents=True, exist_ok=True)
        Path(local_dir, "sub", "w.safetensors").write_bytes(b"weights")
        return local_dir

    class Api:
        def __init__(self, token: str | None) -> None:
            pass

        def model_info(self, repo: str, revision: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(sha="c" * 40)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    manifest = {"vae": Component("org/vae", "main", ("sub/*",), "vae")}
    monkeypatch.delenv("AAT_ALLOW_UNPINNED", raising=False)
    with pytest.raises(SystemExit, match="c" * 40):  # a branch: the build says what to pin
        download(manifest, tmp_path)
    assert fetched == []
    monkeypatch.setenv("AAT_ALLOW_UNPINNED", "1")  # trying a model out
    lock = json.loads(download(manifest, tmp_path).read_text())
    assert fetched == [("org/vae", "c" * 40)]  # one consistent snapshot, not a moving branch
    assert lock["vae"]["commit"] == "c" * 40
    assert lock["vae"]["sha256"] == {"sub/w.safetensors": hashlib.sha256(b"weights").hexdigest()}
    assert "AAT_ALLOW_UNPINNED" in caplog.text


def test_a_weight_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch) -> None:
    import types

    import huggingface_hub

    from workers.common.hub import Component, download

    def snapshot_download(repo_id: str, revision: str, allow_patterns: list[str],
                          local_dir: str, token: str | None) -> str:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        Path(local_dir, "w.safetensors").write_bytes(b"tampered")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    def model_info(repo: str, revision: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(sha=revision)

    monkeypatch.setattr(huggingface_hub, "HfApi",
                        lambda token: types.SimpleNamespace(model_info=model_info))
    comp = Component("org/vae", "a" * 40, ("w.safetensors",), "vae",
                     sha256=(("w.safetensors", "0" * 64),))
    with pytest.raises(SystemExit, match="refusing to bake it"):
        download({"vae": comp}, tmp_path)
    assert not (tmp_path / "manifest.lock.json").exists()


def _stage(worker: str, app: Path) -> None:
    """Lay the image's /app out under ``app``, exactly as the Dockerfile's COPY lines do."""
    import shutil

    for op, rest in instructions(worker):
        if op != "COPY":
            continue
        *sources, dest = [p for p in shlex.split(rest) if not p.startswith("--")]
        target = app / dest.removeprefix("/app/").lstrip("/")
        for src in sources:
            path = ROOT / src
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True)
            elif dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


@pytest.mark.parametrize("worker", WORKERS)
def test_the_image_code_imports_with_only_what_the_dockerfile_copies(worker: str,
                                                                     tmp_path: Path) -> None:
    import subprocess
    import sys

    app = tmp_path / "app"
    _stage(worker, app)
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path[:] = [{str(app)!r}] + [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
        f"import workers.{worker}.handler as h, workers.{worker}.pipeline, "
        f"workers.{worker}.weights\n"
        f"assert h.__file__.startswith({str(app)!r}), h.__file__\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=app, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
