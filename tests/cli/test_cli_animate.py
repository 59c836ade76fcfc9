"""`aat animate` end to end on emulated endpoints: our animate worker (echo stand-in) and
RunPod's public Qwen-Image-Edit endpoint (stand-in that fetches the presigned S3 URL of a real
S3-protocol server and answers with an image URL). The sheet a user gets has its cells at the
declared size, transparent where the key colour was, on one baseline, with Aseprite JSON and a
Godot .tres that agree with it; a regenerated frame changes only its cell; failures write
nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sprites import knight_png, knight_rgba

from service.core.animate import frame_seed
from service.core.sheets import godot_cells, read_cells
from workers.emulator import EmulatorServer, EndpointConfig, Faults, resolve_handler
from workers.emulator.animate_echo import make_public_handler

ROOT = Path(__file__).resolve().parents[2]
KEY = "emu-key"


def sprite_png(path: Path) -> np.ndarray:
    knight_png(face=True, path=path)
    return knight_rgba(face=True)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer({
        "anim": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4),
        "qwen-image-edit": EndpointConfig(handler=resolve_handler("qwen-edit-echo"), workers=4),
        "qwen-image-edit-cloud": EndpointConfig(
            handler=make_public_handler(cloud_network=True), workers=2),
        "anim-broken": EndpointConfig(handler=resolve_handler("animate-echo"), workers=4,
                                      faults=Faults.parse("fatal=1:1", seed=1)),
    }, api_key=KEY) as emu:
        yield emu


def env_for(emu: EmulatorServer, data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AAT_", "RUNPOD_", "AWS_"))}
    env.update({"AAT_DATA_DIR": str(data), "RUNPOD_API_KEY": KEY,
                "AAT_RUNPOD_BASE_URL": emu.url, "AAT_RUNPOD_POLL_MIN_S": "0.02",
                "AAT_RUNPOD_BACKOFF_BASE_S": "0.05"}, **extra)
    return env


def aat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "animate", *args, "--edit-side",
                           "64"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def check_sheet(out: Path, frames: int, cell: tuple[int, int]) -> list[np.ndarray]:
    """What a user checks: size, cells, transparency, baseline, metadata agreeing."""
    sheet = rgba(out)
    w, h = cell
    assert sheet.shape == (h, w * frames, 4)
    fmt, rects = read_cells(out.with_suffix(".json").name,
                            out.with_suffix(".json").read_text(), sheet.shape[0])
    assert fmt == "aseprite" and rects == [(i * w, 0, w, h) for i in range(frames)]
    meta = json.loads(out.with_suffix(".json").read_text())["meta"]
    assert meta["image"] == out.name and meta["size"] == {"w": w * frames, "h": h}
    assert meta["frameTags"][0]["name"] == "walk" and meta["frameTags"][0]["to"] == frames - 1
    tres = out.with_suffix(".tres").read_text()
    assert godot_cells(tres, f"res://{out.name}") == rects
    assert '"name": &"walk"' in tres and '"loop": true' in tres and '"speed": 10.0' in tres
    cells = [sheet[y:y + ch, x:x + cw] for x, y, cw, ch in rects]
    baselines = []
    for c in cells:
        alpha = c[:, :, 3]
        assert alpha[0, 0] == 0 and (alpha[:, :3] == 0).all()  # key colour -> transparent
        visible = c[alpha > 0][:, :3].astype(int)
        assert not ((visible[:, 1] - np.maximum(visible[:, 0], visible[:, 2])) > 40).any()
        baselines.append(int(np.nonzero(alpha >= 128)[0].max()))
    assert max(baselines) - min(baselines) <= 1, baselines
    with Image.open(out.with_suffix(".webp")) as im:
        assert im.n_frames == frames
    return cells


def test_walk_of_8_frames_from_our_worker(emulator: EmulatorServer, tmp_path: Path) -> None:
    sprite_png(tmp_path / "hero.png")
    env = env_for(emulator, tmp_path / "data", RUNPOD_ANIMATE_ENDPOINT_ID="anim")
    out = tmp_path / "hero_walk.png"
    done = aat(env, str(tmp_path / "hero.png"), "--motion", "walk", "--frames", "8", "-o",
               str(out))
    assert done.returncode == 0, done.stderr
    assert "8 frames of 24x32" in done.stdout and "palette distance" in done.stdout
    cells = check_sheet(out, 8, (24, 32))
    assert emulator.stats("anim")["by_status"].get("COMPLETED") == 8
    assert len({c.tobytes() for c in cells}) > 1  # the poses differ

    # regenerate frame 3: only its cell changes, the metadata stays the same
    before, meta_before = rgba(out), out.with_suffix(".json").read_text()
    again = aat(env, str(tmp_path / "hero.png"), "--motion", "walk", "--frames", "8", "-o",
                str(out), "--regenerate", "3", "--attempt", "4")
    assert again.returncode == 0, again.stderr
    assert "(frame 3 generated again, 7 kept as they were; 8 frames of 24x32" in again.stdout
    assert emulator.stats("anim")["by_status"].get("COMPLETED") == 9  # one more frame made
    assert "regenerated with --attempt 4; not it yet? the same command with --attempt 5" \
        in again.stdout  # the same attempt would give the same frame
    after = rgba(out)
    changed = np.nonzero((before != after).any(axis=(0, 2)))[0]
    assert changed.size > 0 and changed.min() >= 48 and changed.max() < 72, changed
    data, data_before = json.loads(out.with_suffix(".json").read_text()), json.loads(meta_before)
    assert data["frames"] == data_before["frames"]  # the cells stay where they were
    assert records(out)[2] == {"attempt": 4, "seed": frame_seed(0, 2, 4)}  # the explicit one
    assert records(out)[:2] == records_of(data_before)[:2] == [
        {"attempt": 0, "seed": frame_seed(0, i)} for i in range(2)]
    check_sheet(out, 8, (24, 32))

    # the upscale path takes the sheet with its cells and writes the metadata scaled
    big = tmp_path / "big" / "hero_walk.png"
    big.parent.mkdir()
    up = subprocess.run([sys.executable, "-m", "service.cli", "upscale", str(out), "--sheet",
                         str(out.with_suffix(".json")), "-s", "2", "--backend", "none",
                         "--upscaler", "lanczos", "-o", str(big)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    _, scaled = read_cells("hero_walk.json", big.with_suffix(".json").read_text(), 64)
    assert scaled == [(i * 48, 0, 48, 64) for i in range(8)]


def records_of(data: dict[str, Any]) -> list[dict[str, int]]:
    return list(data["meta"]["aat"]["frames"])


def records(out: Path) -> list[dict[str, int]]:
    """Each frame's recorded attempt and seed, from the sheet's Aseprite JSON."""
    return records_of(json.loads(out.with_suffix(".json").read_text()))


def test_regenerate_takes_the_next_attempt_and_keeps_the_others_records(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    sprite_png(tmp_path / "hero.png")
    env = env_for(emulator, tmp_path / "data", RUNPOD_ANIMATE_ENDPOINT_ID="anim")
    out = tmp_path / "hero_walk.png"
    args = [str(tmp_path / "hero.png"), "--motion", "walk", "--frames", "4", "-o", str(out)]
    assert aat(env, *args).returncode == 0
    first = rgba(out)[:, 48:72]
    cells_3 = []
    for n in (1, 2):  # the same command twice, no --attempt
        done = aat(env, *args, "--regenerate", "3")
        assert done.returncode == 0, done.stderr
        assert f"regenerated frame 3 attempt {n}; not it yet? the same command tries" \
            in done.stdout
        assert records(out)[2] == {"attempt": n, "seed": frame_seed(0, 2, n)}
        cells_3.append(rgba(out)[:, 48:72])
    assert len({first.tobytes(), cells_3[0].tobytes(), cells_3[1].tobytes()}) == 3

    # another frame regenerated: frame 3 keeps its pixels, attempt and seed
    done = aat(env, *args, "--regenerate", "2")
    assert done.returncode == 0, done.stderr
    assert (rgba(out)[:, 48:72] == cells_3[1]).all()
    assert records(out) == [
        {"attempt": 0, "seed": frame_seed(0, 0)}, {"attempt": 1, "seed": frame_seed(0, 1, 1)},
        {"attempt": 2, "seed": frame_seed(0, 2, 2)}, {"attempt": 0, "seed": frame_seed(0, 3)}]
    check_sheet(out, 4, (24, 32))  # still a sheet and metadata engines read


def test_public_endpoint_fetches_a_presigned_url(emulator: EmulatorServer, tmp_path: Path,
                                                 s3_server: Any) -> None:
    sprite_png(tmp_path / "hero.png")
    bucket = s3_server.make_bucket()
    env = env_for(emulator, tmp_path / "data", AAT_ANIMATE_BACKEND="public",
                  AAT_ARTIFACTS_URL=f"s3://{bucket}/aat", AAT_S3_ENDPOINT_URL=s3_server.endpoint_url,
                  AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    out = tmp_path / "sheet.png"
    done = aat(env, str(tmp_path / "hero.png"), "--frames", "8", "-o", str(out))
    assert done.returncode == 0, done.stderr
    check_sheet(out, 8, (24, 32))
    assert emulator.stats("qwen-image-edit")["by_status"].get("COMPLETED") == 8
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="aat/inputs/")
    assert listed.get("KeyCount", 0) >= 1  # the canvas the endpoint fetched


def test_public_endpoint_without_a_bucket_says_what_to_configure(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    sprite_png(tmp_path / "hero.png")
    env = env_for(emulator, tmp_path / "data", AAT_ANIMATE_BACKEND="public")
    done = aat(env, str(tmp_path / "hero.png"), "-o", str(tmp_path / "sheet.png"))
    assert done.returncode == 3  # setup (service.cli.errors)
    assert "error [edit_needs_url]" in done.stderr and "AAT_ARTIFACTS_URL" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hero.png"]
    assert emulator.stats("qwen-image-edit")["submitted"] == 0


def test_public_endpoint_without_a_reachable_image_url_fails_clearly(
        emulator: EmulatorServer, tmp_path: Path, s3_server: Any) -> None:
    sprite_png(tmp_path / "hero.png")
    s3 = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    # the bucket is on this machine: the cloud endpoint cannot fetch its URLs
    env = env_for(emulator, tmp_path / "data", AAT_ANIMATE_BACKEND="public",
                  AAT_RUNPOD_EDIT_PUBLIC_SLUG="qwen-image-edit-cloud",
                  AAT_ARTIFACTS_URL=f"s3://{s3_server.make_bucket()}/aat",
                  AAT_S3_ENDPOINT_URL=s3_server.endpoint_url, **s3)
    done = aat(env, str(tmp_path / "hero.png"), "--frames", "4", "-o",
               str(tmp_path / "sheet.png"))
    assert done.returncode == 3  # setup (service.cli.errors)
    assert "error [edit_url_unreachable]" in done.stderr and "127.0.0.1" in done.stderr
    # a bucket nobody answers for: refused before any frame is sent
    env = env_for(emulator, tmp_path / "data", AAT_ANIMATE_BACKEND="public",
                  AAT_ARTIFACTS_URL="s3://no-such-bucket-aat/x",
                  AAT_S3_ENDPOINT_URL="http://127.0.0.1:9/", **s3)  # nothing listens there
    unreachable = aat(env, str(tmp_path / "hero.png"), "-o", str(tmp_path / "sheet.png"))
    assert unreachable.returncode == 3  # setup (service.cli.errors)
    assert "error [config_invalid]" in unreachable.stderr and "Traceback" not in unreachable.stderr
    assert emulator.stats("qwen-image-edit")["submitted"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "hero.png"]


def test_failed_frame_and_bad_motion_write_nothing(emulator: EmulatorServer,
                                                   tmp_path: Path) -> None:
    sprite_png(tmp_path / "hero.png")
    env = env_for(emulator, tmp_path / "data", RUNPOD_ANIMATE_ENDPOINT_ID="anim-broken")
    failed = aat(env, str(tmp_path / "hero.png"), "--frames", "4", "-o",
                 str(tmp_path / "sheet.png"))
    assert failed.returncode == 1
    assert "error [worker_fatal]" in failed.stderr and "of 4:" in failed.stderr
    bad = aat(env, str(tmp_path / "hero.png"), "--motion", "moonwalk", "-o",
              str(tmp_path / "sheet.png"))
    assert bad.returncode == 2
    assert "error [motion_unknown]" in bad.stderr and "walk" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hero.png"]


def test_delivery_beside_the_source_in_the_repo(emulator: EmulatorServer, tmp_path: Path) -> None:
    repo = tmp_path / "game"
    (repo / "art").mkdir(parents=True)
    sprite_png(repo / "art" / "hero.png")
    env = env_for(emulator, tmp_path / "data", RUNPOD_ANIMATE_ENDPOINT_ID="anim",
                  AAT_REPOS=json.dumps({"game": str(repo)}))
    done = aat(env, "art/hero.png", "--repo", "game", "--frames", "4", "--motion", "run")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (repo / "art").iterdir())
    assert names == ["hero.png", "hero_run.json", "hero_run.png", "hero_run.tres",
                     "hero_run.webp"]
    tres = (repo / "art" / "hero_run.tres").read_text()
    assert len(godot_cells(tres, "res://art/hero_run.png")) == 4
    assert '"name": &"run"' in tres and '"speed": 12.0' in tres
    with Image.open(io.BytesIO((repo / "art" / "hero_run.png").read_bytes())) as im:
        assert im.size == (96, 32) and im.mode == "RGBA"
    # a bad motion into the repo: nothing new appears
    bad = aat(env, "art/hero.png", "--repo", "game", "--motion", "teleport")
    assert bad.returncode == 2 and sorted(p.name for p in (repo / "art").iterdir()) == names
