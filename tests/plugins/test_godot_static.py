"""Static gates for the Godot plugin: gdtoolkit syntax/style and the engine-API existence check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "plugins/godot/addons/ai_assets_toolbox"
CHECKER = ROOT / "scripts/check_godot_api.py"
BIN = Path(sys.executable).parent
SCRIPTS = sorted(str(p) for p in ADDON.glob("*.gd"))


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_addon_has_the_expected_scripts() -> None:
    names = {Path(p).name for p in SCRIPTS}
    assert {"plugin.gd", "api_client.gd", "context_menu.gd", "dock.gd", "job.gd"} <= names
    cfg = (ADDON / "plugin.cfg").read_text()
    assert 'script="plugin.gd"' in cfg and "[plugin]" in cfg
    for path in SCRIPTS:
        assert Path(path).read_text().startswith("@tool\n"), f"{path} must be a @tool script"


@pytest.mark.parametrize("tool", ["gdparse", "gdlint"])
def test_gdtoolkit_accepts_every_script(tool: str) -> None:
    out = _run(BIN / tool, *SCRIPTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_gdformat_leaves_scripts_unchanged() -> None:
    out = _run(BIN / "gdformat", "--check", *SCRIPTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_gdparse_rejects_a_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gd"
    bad.write_text((ADDON / "job.gd").read_text().replace("func start() -> void:",
                                                          "func start() -> void"))
    assert _run(BIN / "gdparse", bad).returncode != 0


def test_every_engine_symbol_exists_in_the_api_data() -> None:
    out = _run(sys.executable, CHECKER)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 problem(s)" in out.stdout
    checked = int(out.stdout.split(" member references checked")[0].rsplit(" ", 1)[1])
    assert checked > 150, out.stdout  # the check really looked the plugin's calls up


@pytest.mark.parametrize(
    ("good", "bad", "where"),
    [
        ("get_resource_filesystem", "get_resoruce_filesystem", "EditorInterface"),
        ("request_raw", "request_rawx", "HTTPRequest"),
        ("use_threads", "use_thread", "HTTPRequest"),
        ("reimport_files", "reimport_file", "EditorFileSystem"),
        ("CONTEXT_SLOT_FILESYSTEM", "CONTEXT_SLOT_FILES", "EditorContextMenuPlugin"),
        ("func _popup_menu", "func _popup_menus", "overrides nothing"),
        ("request_completed", "request_complete", "HTTPRequest"),
        ("add_control_to_dock(", "add_control_dock(", "add_control_dock"),
        ("func _popup_menu(paths: PackedStringArray)", "func _get_menu_options(paths: Dictionary)",
         "needs Godot 4.6"),
        ("var _dock: Dock", "var _dock: EditorDock", "needs Godot 4.6"),
    ],
)
def test_a_wrong_symbol_makes_the_check_fail(tmp_path: Path, good: str, bad: str,
                                             where: str) -> None:
    copy = tmp_path / "addon"
    shutil.copytree(ADDON, copy)
    changed = 0
    for path in copy.glob("*.gd"):
        text = path.read_text()
        if good in text:
            path.write_text(text.replace(good, bad))
            changed += 1
    assert changed, f"{good!r} is not used by the plugin any more"
    out = _run(sys.executable, CHECKER, copy)
    assert out.returncode == 1, out.stdout
    assert where in out.stdout, out.stdout
    new_words = set(re.findall(r"\w+", bad)) - set(re.findall(r"\w+", good))
    assert any(word in out.stdout for word in new_words), out.stdout  # names the culprit


def test_token_stays_out_of_the_project_and_quitting_cancels_requests() -> None:
    sources = {Path(p).name: Path(p).read_text() for p in SCRIPTS}
    everything = "\n".join(sources.values())
    assert "ProjectSettings.set_setting" not in everything  # project.godot is committed
    assert "EditorInterface.get_editor_settings()" in sources["settings.gd"]
    assert "PROPERTY_HINT_PASSWORD" in sources["settings.gd"]
    exit_tree = sources["plugin.gd"].split("func _exit_tree", 1)[1].split("\nfunc ", 1)[0]
    assert "_api.cancel_all()" in exit_tree
    cancel_all = sources["api_client.gd"].split("func cancel_all", 1)[1]
    assert "cancel_request()" in cancel_all
