"""Result naming, repo confinement and the atomic write."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from service.core import formats
from service.core.errors import PathError
from service.core.naming import confine, result_path
from service.core.params import UpscaleParams
from watcher.deliver import relative_target, write_atomic

P2 = UpscaleParams(scale=2)


@pytest.mark.parametrize(
    ("rel", "params", "naming", "target_dir", "mirror", "fmt", "expected"),
    [
        ("props/crate.png", P2, "suffix", "", None, None, "props/crate_x2.png"),
        ("props/crate.png", UpscaleParams(scale=1.5), "suffix", "", None, None, "props/crate_x1.5.png"),
        ("props/crate.png", UpscaleParams(width=512), "suffix", "", None, None, "props/crate_512x256.png"),
        ("props/crate.png", P2, "replace", "tex", None, None, "tex/props/crate.png"),
        ("props/crate.png", P2, "mirror", "", "up", None, "up/props/crate.png"),
        ("props/crate.png", P2, "mirror", "tex", "up", "webp", "up/tex/props/crate.webp"),
        ("rock.jpeg", P2, "replace", "", None, None, "rock.jpg"),
        ("rock.bmp", P2, "replace", "", None, None, "rock.png"),
        ("rock.tga", P2, "suffix", "", None, "png", "rock_x2.png"),
    ],
)
def test_result_names(rel: str, params: UpscaleParams, naming: str, target_dir: str,
                      mirror: str | None, fmt: str | None, expected: str) -> None:
    found = formats.by_suffix(PurePosixPath(rel).suffix)
    assert found is not None
    got = relative_target(PurePosixPath(rel), params, naming, target_dir, mirror, fmt,
                          src_size=(256, 128), input_format=found.pillow)
    assert got.as_posix() == expected


def test_paths_stay_inside_the_repo(tmp_path: Path) -> None:
    assert confine(tmp_path, PurePosixPath("a/b.png")) == tmp_path.resolve() / "a" / "b.png"
    with pytest.raises(PathError) as exc:
        result_path("../x.png", "replace", ext=".png", tag="")
    assert exc.value.code == "path_escape"
    with pytest.raises(PathError) as exc:
        result_path("a/b.png", "suffix", ext=".import", tag="_x2")
    assert exc.value.code == "path_forbidden"
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(PathError):
        confine(tmp_path, PurePosixPath("link/x.png"))


def test_atomic_write_replaces_skips_identical_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "tex" / "rock_x2.png"
    sidecar = tmp_path / "tex" / "rock_x2.png.import"
    assert write_atomic(target, b"one") is True
    sidecar.write_text("[remap]\n")
    mtime = target.stat().st_mtime_ns
    assert write_atomic(target, b"one") is False  # identical: no write, no mtime bump
    assert target.stat().st_mtime_ns == mtime
    assert write_atomic(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert sidecar.read_text() == "[remap]\n"
    assert sorted(os.listdir(target.parent)) == ["rock_x2.png", "rock_x2.png.import"]
