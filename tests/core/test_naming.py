"""Where a result goes: one table of names and one of refusals (service.core.naming)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from service.core.errors import ParamsError, PathError
from service.core.naming import (
    NAMING_MODES,
    confine,
    confine_file,
    is_inside,
    result_for,
    result_path,
    size_tag,
)
from service.core.params import UpscaleParams


@pytest.mark.parametrize(("source", "naming", "ext", "tag", "mirror", "expected"), [
    ("props/crate.png", "suffix", ".png", "_x2", None, "props/crate_x2.png"),
    ("props/crate.png", "replace", ".webp", "_x2", None, "props/crate.webp"),
    ("props/crate.png", "mirror", ".png", "_x2", "up/hd", "up/hd/props/crate.png"),
    ("a b/c d.PNG", "suffix", ".png", "_x1.5", None, "a b/c d_x1.5.png"),
    ("v1.2.rock.png", "suffix", ".jpg", "_x2", None, "v1.2.rock_x2.jpg"),
    ("rock_x2.png", "suffix", ".png", "_x2", None, "rock_x2_x2.png"),
    ("épée/武器.tga", "mirror", ".tga", "_x2", "hd", "hd/épée/武器.tga"),
    ("tex\\rock.png", "suffix", ".png", "_64x32", None, "tex/rock_64x32.png"),
    ("noext", "suffix", ".png", "_x2", None, "noext_x2.png"),
])
def test_result_names(source: str, naming: str, ext: str, tag: str, mirror: str | None,
                      expected: str) -> None:
    assert result_path(source, naming, ext=ext, tag=tag, mirror_dir=mirror).as_posix() == expected


@pytest.mark.parametrize(("source", "naming", "mirror", "code"), [
    ("../x.png", "suffix", None, "path_escape"),
    ("/etc/x.png", "replace", None, "path_escape"),
    ("C:/x.png", "replace", None, "path_escape"),
    ("a/../../x.png", "suffix", None, "path_escape"),
    ("a/x.png", "mirror", "../out", "path_escape"),
    ("a/x\x00.png", "suffix", None, "path_forbidden"),
    ("a/x\n.png", "suffix", None, "path_forbidden"),
    ("a/x\x7f.png", "suffix", None, "path_forbidden"),
    ("a/x.png", "mirror", "up\x00", "path_forbidden"),
    ("a/x.png", "mirror", ".git", "path_forbidden"),
    ("a/.GIT/x.png", "replace", None, "path_forbidden"),
    ("a/x.png", "mirror", ".Git/hooks", "path_forbidden"),
])
def test_refused_paths(source: str, naming: str, mirror: str | None, code: str) -> None:
    with pytest.raises(PathError) as info:
        result_path(source, naming, ext=".png", tag="_x2", mirror_dir=mirror)
    assert info.value.code == code and "\n" not in info.value.message


def test_a_result_never_names_an_engine_sidecar() -> None:
    for ext in (".import", ".meta", ".META"):
        with pytest.raises(PathError) as info:
            result_path("a/x.png", "suffix", ext=ext, tag="_x2")
        assert info.value.code == "path_forbidden"


def test_mirror_needs_its_folder_and_unknown_modes_are_refused() -> None:
    assert NAMING_MODES == ("suffix", "replace", "mirror")
    with pytest.raises(ParamsError, match="mirror_dir"):
        result_path("a.png", "mirror", ext=".png", tag="_x2")
    with pytest.raises(ParamsError, match="suffix, replace, mirror"):
        result_path("a.png", "rename", ext=".png", tag="_x2")


def test_size_tag_and_output_suffix_follow_the_params() -> None:
    assert size_tag(UpscaleParams(scale=2), (10, 10)) == "_x2"
    assert size_tag(UpscaleParams(scale=1.25), (10, 10)) == "_x1.25"
    assert size_tag(UpscaleParams(width=64), (32, 16)) == "_64x32"
    assert size_tag(UpscaleParams(width=5, height=7), (32, 16)) == "_5x7"
    found = result_for("a/rock.bmp", "suffix", UpscaleParams(), input_format="BMP",
                       src_size=(8, 8))
    assert found.as_posix() == "a/rock_x2.png"  # BMP is read, never written: PNG
    found = result_for("a/rock.png", "replace", UpscaleParams(output_format="jpeg"),
                       input_format="PNG", src_size=(8, 8))
    assert found.as_posix() == "a/rock.jpg"


def test_confine_refuses_a_link_out_of_the_repo(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    (repo / "tex").symlink_to(outside)
    assert confine(repo, PurePosixPath("a/b.png")) == repo.resolve() / "a" / "b.png"
    with pytest.raises(PathError) as info:
        confine(repo, PurePosixPath("tex/rock.png"), repo="game")
    assert info.value.code == "path_escape" and "'game'" in info.value.message


def test_confine_file_takes_files_inside_a_root_and_names_each_refusal(tmp_path: Path) -> None:
    inbox, repo, outside = tmp_path / "inbox", tmp_path / "repo", tmp_path / "outside"
    for folder in (inbox, repo, outside):
        folder.mkdir()
    for f in (inbox / "a.png", repo / "b.png", outside / "c.png"):
        f.write_bytes(b"x")
    (inbox / "link.png").symlink_to(outside / "c.png")
    roots = [inbox, repo]
    assert confine_file(str(inbox / "a.png"), roots) == (inbox / "a.png").resolve()
    assert confine_file(repo / "b.png", roots) == (repo / "b.png").resolve()
    refused = {
        str(outside / "c.png"): "path_escape",
        str(inbox / ".." / "outside" / "c.png"): "path_escape",
        str(inbox / "link.png"): "path_escape",
        "relative.png": "path_forbidden",
        str(inbox / "a\x00.png"): "path_forbidden",
        str(inbox / "none.png"): "path_not_found",
        str(inbox): "path_not_found",
        str(inbox / ("a" * 300 + ".png")): "path_not_found",  # longer than a name may be
    }
    for raw, code in refused.items():
        with pytest.raises(PathError) as info:
            confine_file(raw, roots)
        assert info.value.code == code, (raw, info.value.message)
    with pytest.raises(PathError) as info:
        confine_file(str(outside / "c.png"), roots)
    assert "AAT_INTAKE_ROOTS" in info.value.message, "the refusal says how to allow the folder"


def test_is_inside_follows_links_on_both_sides(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "tex").mkdir(parents=True)
    outside.mkdir()
    (repo / "out").symlink_to(outside)
    (tmp_path / "alias").symlink_to(repo)
    table = {
        repo / "tex" / "a.png": True,
        repo / "new" / "b.png": True,  # need not exist
        repo / "out" / "c.png": False,  # a link out of the repo
        repo / ".." / "outside" / "d.png": False,
        tmp_path / "alias" / "tex" / "e.png": True,  # reached through a link to the repo
    }
    assert {p: is_inside(repo, p) for p in table} == table
    assert is_inside(tmp_path / "alias", repo / "tex" / "a.png")
