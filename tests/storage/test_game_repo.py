"""Delivery into a game repo: naming, confinement, sidecars, identical bytes, atomicity, git."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from service.core import atomic
from service.core.errors import DeliveryError, ParamsError, PathError
from service.core.jobs import TargetSpec
from service.storage import game_repo
from service.storage.game_repo import deliver


def _deliver(settings: Any, path: str, data: bytes, **target: Any) -> game_repo.Delivery:
    return deliver(settings, TargetSpec(repo="game", path=path, **target), data, ext=".png",
                   label="_x2", job_id="j_test")


def test_naming_modes(job_settings: Any, tmp_path: Path) -> None:
    s = job_settings()
    repo = tmp_path / "repo"
    assert _deliver(s, "tex/rock.png", b"one").rel == "tex/rock_x2.png"
    assert _deliver(s, "tex/rock.png", b"two", naming="replace").rel == "tex/rock.png"
    mirrored = _deliver(s, "tex/rock.png", b"three", naming="mirror", mirror_dir="upscaled")
    assert mirrored.rel == "upscaled/tex/rock.png"
    assert (repo / "tex/rock_x2.png").read_bytes() == b"one"
    assert (repo / "upscaled/tex/rock.png").read_bytes() == b"three"
    with pytest.raises(ParamsError):
        _deliver(s, "tex/rock.png", b"x", naming="mirror")


@pytest.mark.parametrize("path,extra", [
    ("../outside.png", {}),
    ("/etc/outside.png", {}),
    ("tex/../../outside.png", {}),
    ("tex/rock.png", {"naming": "mirror", "mirror_dir": "../out"}),
    ("tex/rock.png", {"naming": "mirror", "mirror_dir": ".git"}),
    ("tex/rock.png", {"naming": "mirror", "mirror_dir": ".GIT"}),  # case-insensitive disks
    ("sub/.Git/rock.png", {"naming": "replace"}),
    ("tex/ro\x00ck.png", {}),  # was a ValueError (HTTP 500)
    ("tex/rock.png", {"naming": "mirror", "mirror_dir": "up\x00"}),
    ("tex\\..\\..\\outside.png", {}),
])
def test_path_escapes_are_refused(job_settings: Any, tmp_path: Path, path: str,
                                  extra: dict[str, str]) -> None:
    with pytest.raises(PathError):
        _deliver(job_settings(), path, b"x", **extra)
    assert not (tmp_path / "outside.png").exists() and not (tmp_path / "out").exists()


def test_symlink_escape_is_refused(job_settings: Any, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "repo" / "linked").symlink_to(outside)
    with pytest.raises(PathError) as info:
        _deliver(job_settings(), "linked/rock.png", b"x")
    assert info.value.code == "path_escape"
    assert list(outside.iterdir()) == []


def test_unknown_repo_names_the_known_ones(job_settings: Any) -> None:
    with pytest.raises(PathError, match="known: game"):
        deliver(job_settings(), TargetSpec(repo="nope", path="a.png"), b"x", ext=".png",
                label="_x2", job_id="j")


def test_identical_bytes_are_not_rewritten(job_settings: Any, tmp_path: Path) -> None:
    s = job_settings()
    first = _deliver(s, "tex/rock.png", b"same bytes")
    os.utime(first.path, ns=(1_000_000_000, 1_000_000_000))
    again = _deliver(s, "tex/rock.png", b"same bytes")
    assert first.written and not again.written
    assert again.path.stat().st_mtime_ns == 1_000_000_000
    changed = _deliver(s, "tex/rock.png", b"new bytes")
    assert changed.written and changed.path.read_bytes() == b"new bytes"


def test_sidecars_are_never_touched(job_settings: Any, tmp_path: Path) -> None:
    tex = tmp_path / "repo" / "tex"
    tex.mkdir(parents=True)
    (tex / "rock_x2.png").write_bytes(b"old")
    sidecars = {tex / "rock_x2.png.import": b"[remap]\nuid=\"uid://abc\"\n",
                tex / "rock_x2.png.meta": b"guid: 0123456789abcdef\n"}
    for path, body in sidecars.items():
        path.write_bytes(body)
        os.utime(path, ns=(5_000_000_000, 5_000_000_000))
    _deliver(job_settings(), "tex/rock.png", b"new pixels")
    assert (tex / "rock_x2.png").read_bytes() == b"new pixels"
    for path, body in sidecars.items():
        assert path.read_bytes() == body and path.stat().st_mtime_ns == 5_000_000_000
    assert sorted(p.name for p in tex.iterdir()) == [
        "rock_x2.png", "rock_x2.png.import", "rock_x2.png.meta"]  # no temp files left


def test_a_reader_never_sees_a_partial_file(job_settings: Any, tmp_path: Path) -> None:
    s = job_settings()
    payloads = [bytes([i]) * (1 << 20) for i in (1, 2)]
    target = tmp_path / "repo" / "tex" / "rock_x2.png"
    _deliver(s, "tex/rock.png", payloads[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        _deliver(s, "tex/rock.png", payloads[i % 2])
    stop.set()
    reader.join()
    assert seen and all(body in payloads for body in seen)


def test_a_file_held_open_is_retried(job_settings: Any, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows refuses os.replace while an importer holds the target open; Linux never does,
    # so the refusal is simulated for the first two attempts.
    real_replace = os.replace
    calls = {"n": 0}

    def held_open(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise PermissionError(32, "The process cannot access the file")
        real_replace(src, dst)

    monkeypatch.setattr(atomic, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    monkeypatch.setattr(os, "replace", held_open)
    done = _deliver(job_settings(), "tex/rock.png", b"pixels")
    assert done.path.read_bytes() == b"pixels" and calls["n"] == 3
    assert sorted(p.name for p in done.path.parent.iterdir()) == ["rock_x2.png"]


def test_optional_git_commit_records_the_job(job_settings: Any, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_text("artist's uncommitted work")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    env = {"GIT_AUTHOR_NAME": "aat", "GIT_AUTHOR_EMAIL": "aat@example.com",
           "GIT_COMMITTER_NAME": "aat", "GIT_COMMITTER_EMAIL": "aat@example.com"}
    os.environ.update(env)
    try:
        done = _deliver(job_settings(git_commit=True), "tex/rock.png", b"pixels")
    finally:
        for key in env:
            os.environ.pop(key, None)
    assert done.commit
    log = subprocess.run([*git, "show", "--stat", "--format=%B", "HEAD"], capture_output=True,
                         text=True, check=True).stdout
    assert "Pipeline-Job: j_test" in log and "tex/rock_x2.png" in log
    assert "notes.txt" not in log  # the artist's staged file stays out of our commit


def test_a_folder_where_the_result_goes_is_a_clear_delivery_error(
        job_settings: Any, tmp_path: Path) -> None:
    (tmp_path / "repo" / "tex" / "rock_x2.png").mkdir(parents=True)
    with pytest.raises(DeliveryError) as info:
        _deliver(job_settings(), "tex/rock.png", b"x")
    assert "tex/rock_x2.png" in info.value.message and "folder" in info.value.message
    assert list((tmp_path / "repo" / "tex" / "rock_x2.png").iterdir()) == []


@pytest.mark.parametrize("naming,extra,rel", [
    ("suffix", {}, "tex/rock_x2.png"),
    ("mirror", {"mirror_dir": "hd"}, "hd/tex/rock.png"),
])
def test_a_file_the_artist_made_is_never_overwritten(job_settings: Any, tmp_path: Path,
                                                    naming: str, extra: dict[str, str],
                                                    rel: str) -> None:
    s = job_settings()
    handmade = tmp_path / "repo" / rel
    handmade.parent.mkdir(parents=True, exist_ok=True)
    handmade.write_bytes(b"painted by hand")
    ours: dict[str, str] = {}  # the delivery record: what this service wrote, by path

    def send(data: bytes, **more: Any) -> game_repo.Delivery:
        done = deliver(s, TargetSpec(repo="game", path="tex/rock.png", naming=naming,
                                     **extra, **more),
                       data, ext=".png", label="_x2", job_id="j_test",
                       last_delivered=ours.get, input_sha256="0" * 64)
        ours[done.rel] = game_repo.sha256_file(done.path) or ""
        return done

    with pytest.raises(DeliveryError) as info:
        send(b"upscaled")
    assert info.value.code == "delivery_conflict" and not info.value.retryable
    assert "not written by AI Assets Toolbox" in info.value.message
    assert "overwrite=true" in info.value.message  # says how to force it
    assert handmade.read_bytes() == b"painted by hand"
    assert sorted(p.name for p in handmade.parent.iterdir()) == [handmade.name]
    assert send(b"upscaled", overwrite=True).written  # forced
    assert handmade.read_bytes() == b"upscaled"
    assert send(b"upscaled again").written  # now it is our delivery: replaced freely
    handmade.write_bytes(b"painted over")  # edited after our delivery: kept again
    with pytest.raises(DeliveryError, match="edited after it was delivered"):
        send(b"upscaled a third time")
    assert handmade.read_bytes() == b"painted over"
    assert send(b"painted over").written is False  # byte-identical: nothing to refuse
