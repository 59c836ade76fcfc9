"""One GPU backend factory: what it builds from the settings, and that it is the only place
in `service/` that constructs a backend (a second copy would drift, as three once did)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.backends.factory import make_backend
from service.backends.runpod import RunPodBackend
from service.core.errors import ConfigError, ParamsError
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_configured_backend_or_none(tmp_path: Path) -> None:
    none = Settings(data_dir=tmp_path, backend="none", runpod_api_key="k",
                    runpod_upscale_endpoint_id="up")
    auto = Settings(data_dir=tmp_path, backend="auto", runpod_api_key="k",
                    runpod_upscale_endpoint_id="up")
    bare = Settings(data_dir=tmp_path, backend="auto", runpod_api_key=None,
                    runpod_upscale_endpoint_id=None)
    assert make_backend(none) is None
    assert isinstance(make_backend(auto), RunPodBackend)  # auto: a key and an endpoint
    assert make_backend(bare) is None
    assert make_backend(auto, "none") is None  # `aat upscale --backend none`
    assert isinstance(make_backend(none, "runpod"), RunPodBackend)


def test_bad_choices_are_one_clear_error(tmp_path: Path) -> None:
    bare = Settings(data_dir=tmp_path, backend="none", runpod_api_key=None,
                    runpod_upscale_endpoint_id=None)
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY"):
        make_backend(bare, "runpod")
    with pytest.raises(ParamsError, match="unknown backend 'gpu9'"):
        make_backend(bare, "gpu9")


def test_only_the_factory_constructs_a_backend() -> None:
    calls = []
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("RunPodBackend", "LocalBackend"):
                calls.append(str(path.relative_to(ROOT)))
    assert sorted(calls) == ["service/backends/factory.py", "service/backends/factory.py"]
