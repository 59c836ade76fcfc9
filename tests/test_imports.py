"""Import boundaries: the API, job runner, CLI and watcher never load torch, and the core
imports nothing of ours outside itself. Every module must import (no dead imports)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "peft", "bpy")


def _modules(package: str) -> list[str]:
    pkg_path = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(pkg_path)], prefix=package + "."):
        # Alembic migration scripts run inside `alembic.context`, never as plain imports.
        if ".migrations" not in info.name:
            names.append(info.name)
    return names


def test_service_and_watcher_never_load_torch() -> None:
    mods = [m for m in _modules("service") + _modules("watcher")]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy modules loaded: {out.stdout.strip()}"
    assert len(mods) > 5


def test_core_imports_nothing_of_ours_outside_core() -> None:
    offenders = []
    for path in (ROOT / "service" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ("workers", "watcher") or (
                    name.startswith("service.") and not name.startswith("service.core")
                ) or top in HEAVY:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_heavy_imports_only_in_worker_pipelines() -> None:
    allowed = {"pipeline.py", "weights.py"}
    offenders = []
    for base in ("service", "workers", "watcher"):
        for path in (ROOT / base).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body:  # module level only: lazy imports inside functions are fine
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                tiny = path.parent == ROOT / "workers" / "tiny"  # random test components, never in an image
                if any(n.split(".")[0] in HEAVY for n in names) and path.name not in allowed \
                        and not tiny:
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []



def test_storage_never_imports_jobs() -> None:
    """The job store speaks the vocabulary of ``service.core.jobs``; importing every storage
    module must not load the layer above it (``service.jobs``: runner, orchestrator, executors)."""
    mods = ["service.storage"] + [
        "service.storage." + info.name
        for info in pkgutil.iter_modules([str(ROOT / "service" / "storage")])
        if info.name != "migrations"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('service.jobs'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "service.storage.job_store" in mods and len(mods) > 5
    assert out.stdout.strip() == "", f"storage loaded {out.stdout.strip()}"
