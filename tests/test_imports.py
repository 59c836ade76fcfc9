"""Import boundaries, stated as what must not load and proven in fresh interpreters:

* importing any module of ``watcher`` (and the REST client it uses) never loads sqlalchemy,
  fastapi, celery or torch;
* importing any module of ``service`` (API, runner, CLI) never loads torch and never imports
  ``workers`` (the emulator and GPU code load only inside the commands that need them);
* `aat --help` loads neither the pydantic settings nor httpx (a command's help costs little more
  than starting Python; `bench/cli_startup.py` prints the ratio);
* ``service.core`` imports nothing of ours outside itself; torch & co. appear only in
  ``workers/*/pipeline.py`` (and weights/tiny models);
* there is no import cycle between modules of ``service`` (lazy imports inside functions count:
  they are cycles in the design all the same).

Every module must import (no dead imports).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "peft", "bpy")
SERVER = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "celery", "kombu", "alembic")


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


def _loaded_after_importing(mods: list[str], watch: tuple[str, ...]) -> list[str]:
    """Which of ``watch`` (top-level names) are in ``sys.modules`` after importing ``mods`` in
    a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(','.join(h for h in {watch!r} if any(k == h or k.startswith(h + '.') "
        "for k in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [name for name in out.stdout.strip().split(",") if name]


def test_watcher_never_loads_the_server_or_gpu_stack() -> None:
    mods = _modules("watcher") + ["service.client"]
    assert _loaded_after_importing(mods, SERVER + HEAVY) == []


def test_service_never_imports_workers() -> None:
    mods = _modules("service")
    assert _loaded_after_importing(mods, ("workers",)) == []


def test_aat_help_loads_neither_settings_nor_httpx() -> None:
    code = ("import sys\n"
            "sys.argv = ['aat', '--help']\n"
            "from service.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "heavy = ('httpx', 'pydantic_settings', 'service.settings', 'rich', 'PIL',\n"
            "         'numpy', 'sqlalchemy', 'fastapi', 'celery', 'torch')\n"
            "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stderr.strip() == "", f"`aat --help` loaded: {out.stderr.strip()}"
    assert "upscale" in out.stdout


def _module_files(package: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside functions, except those under
    ``if TYPE_CHECKING:`` (which never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> modules of ``package`` it imports (``from a import b`` counts ``a.b`` when b
    is a module; a package's own ``__init__`` is not counted as imported by its children)."""
    files = _module_files(package)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_service_modules() -> None:
    graph = import_graph("service")
    assert len(graph) > 50 and "service.core.jobs" in graph["service.jobs.runner"]
    assert import_cycles(graph) == []


def test_no_cli_prefix_files_in_service() -> None:
    tracked = subprocess.run(["git", "ls-files", "service"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert [p for p in tracked if p.startswith("service/cli_")] == []


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
