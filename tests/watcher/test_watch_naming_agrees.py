"""The watcher predicts where the service delivers a result, with the service's own rule.

If the two disagreed, the watcher would take the service's result as a new input and upscale
its own output again and again. Each row drops a real image into a watched folder, lets the
service decide its place (intake probe + delivery into a real repo folder) and asks the
watcher where it expects it (``JobFlow.expected_output``, and the ``--download`` path): all
three must be the same file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core.animate import AnimateParams
from service.core.jobs import TargetSpec
from service.core.naming import ANIMATION_SUFFIXES, animation_tag
from service.core.params import UpscaleParams
from service.jobs.intake import probe_image
from service.settings import Settings, load_settings
from service.storage.game_repo import deliver, deliver_set
from watcher.deliver import relative_target
from watcher.jobs import Backoff, JobFlow
from watcher.ledger import Entry
from watcher.presets import Preset
from watcher.stability import inspect_image

P2 = UpscaleParams(scale=2)


def image(fmt: str, size: tuple[int, int] = (24, 16), orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(len(fmt) + size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, format=fmt, exif=exif.tobytes())
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


# (file below the watched folder, its bytes, params, naming, target_dir, mirror_dir)
CASES: list[tuple[str, bytes, UpscaleParams, str, str, str | None]] = [
    ("crate.png", image("PNG"), P2, "suffix", "", None),
    ("crate.png", image("PNG"), P2, "replace", "", None),
    ("crate.png", image("PNG"), P2, "mirror", "", "upscaled"),
    ("props/deep/crate.png", image("PNG"), P2, "suffix", "textures", None),
    ("props/deep/crate.png", image("PNG"), P2, "mirror", "textures", "up/hd"),
    ("props/deep/crate.png", image("PNG"), P2, "replace", "textures", None),
    ("my rock (final) v2.png", image("PNG"), P2, "suffix", "", None),
    ("héros/épée_ß 武器.png", image("PNG"), P2, "suffix", "", None),
    ("héros/épée_ß 武器.png", image("PNG"), P2, "mirror", "", "hd"),
    ("v1.2.rock.final.png", image("PNG"), P2, "suffix", "", None),
    ("v1.2.rock.final.png", image("PNG"), P2, "replace", "", None),
    ("rock_x2.png", image("PNG"), P2, "suffix", "", None),
    ("ROCK.PNG", image("PNG"), P2, "suffix", "", None),
    ("ROCK.PNG", image("PNG"), P2, "replace", "", None),
    ("Photo.JPEG", image("JPEG"), P2, "suffix", "", None),
    ("photo.jpg", image("JPEG"), UpscaleParams(scale=1.5), "suffix", "", None),
    ("sky.webp", image("WEBP"), P2, "mirror", "", "up"),
    ("hud.tga", image("TGA"), P2, "suffix", "ui", None),
    ("old.bmp", image("BMP"), P2, "suffix", "", None),
    ("old.bmp", image("BMP"), P2, "replace", "", None),
    ("spin.gif", image("GIF"), P2, "suffix", "", None),
    ("crate.png", image("PNG"), UpscaleParams(scale=2, output_format="webp"), "suffix", "", None),
    ("crate.png", image("PNG"), UpscaleParams(output_format="jpeg", scale=3), "mirror", "",
     "up"),
    ("crate.png", image("PNG"), UpscaleParams(width=60), "suffix", "", None),
    ("crate.png", image("PNG"), UpscaleParams(width=50, height=40), "suffix", "", None),
    # a PNG saved under a .jpg name: the service writes PNG, so the result is .png
    ("liar.jpg", image("PNG"), P2, "suffix", "", None),
    ("liar.jpg", image("PNG"), P2, "replace", "", None),
    # a phone photo stored sideways: the service sizes it after EXIF orientation
    ("phone.jpg", image("JPEG", (30, 20), orientation=6), UpscaleParams(width=40), "suffix",
     "", None),
]


@pytest.fixture
def places(tmp_path: Path) -> Iterator[tuple[Settings, JobFlow, Path, Path]]:
    watched, repo = tmp_path / "art", tmp_path / "repo"
    watched.mkdir()
    repo.mkdir()
    settings = load_settings(data_dir=tmp_path / "data", repos={"game": repo}, backend="none")
    flow = JobFlow(None, None, None, {"game": repo}, False, Backoff(),  # type: ignore[arg-type]
                   max_bytes=1 << 20)
    yield settings, flow, watched, repo
    flow.close()


def _entry(path: Path, root: Path) -> Entry:
    fields: dict[str, Any] = {name: None for name in Entry.__slots__}  # type: ignore[attr-defined]
    fields.update(path=path, root=root)
    return Entry(**fields)


@pytest.mark.parametrize(("rel", "data", "params", "naming", "target_dir", "mirror_dir"), CASES,
                         ids=[f"{c[3]}:{c[0]}" for c in CASES])
def test_the_watcher_expects_the_result_where_the_service_delivers_it(
        places: tuple[Settings, JobFlow, Path, Path], rel: str, data: bytes,
        params: UpscaleParams, naming: str, target_dir: str, mirror_dir: str | None) -> None:
    settings, flow, watched, repo = places
    source = watched / rel
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    preset = Preset(params=params, repo="game", target_dir=target_dir, naming=naming,
                    mirror_dir=mirror_dir)
    entry = _entry(source, watched)

    # the service: what the watcher submits, probed and delivered as a job would be
    sent = flow._target(entry, preset)
    assert sent is not None
    info = probe_image(data, params, settings, filename=source.name)
    done = deliver(settings, TargetSpec.model_validate(sent), b"result", ext=info.output_ext,
                   label=info.label, job_id="j_naming")
    assert done.path.read_bytes() == b"result"

    # the watcher: from the file alone, before any job exists
    seen = inspect_image(data, source.name)
    assert flow.expected_output(entry, preset, seen.size, seen.format) == done.path
    # and with the job's answer in hand (``--download`` writes the result itself)
    downloaded = relative_target(PurePosixPath(rel), params, naming, target_dir, mirror_dir,
                                 info.output_format, (info.width, info.height))
    assert downloaded.as_posix() == done.rel


ANIMATE_CASES = [("hero.png", "suffix", "", None), ("chars/hero.png", "suffix", "sprites", None),
                 ("chars/hero 2.png", "mirror", "", "anim"), ("héros/épée.webp", "suffix", "", None)]


@pytest.mark.parametrize(("rel", "naming", "target_dir", "mirror_dir"), ANIMATE_CASES,
                         ids=[f"{c[1]}:{c[0]}" for c in ANIMATE_CASES])
def test_the_watcher_expects_an_animations_files_where_the_service_delivers_them(
        places: tuple[Settings, JobFlow, Path, Path], rel: str, naming: str, target_dir: str,
        mirror_dir: str | None) -> None:
    settings, flow, watched, repo = places
    source = watched / rel
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(image("PNG"))
    animate = AnimateParams(motion="attack", frames=4)
    preset = Preset(params=P2, repo="game", target_dir=target_dir, naming=naming,
                    mirror_dir=mirror_dir, animate=animate)
    entry = _entry(source, watched)
    sent = flow._target(entry, preset)
    assert sent is not None
    files = {ext: ext.encode() for ext in ANIMATION_SUFFIXES}
    done = deliver_set(settings, TargetSpec.model_validate(sent), files,
                       label=animation_tag(animate), job_id="j_naming")
    assert [d.path.read_bytes() for d in done] == list(files.values())
    expected = flow.expected_outputs(entry, preset, (24, 16))
    assert expected == [d.path for d in done]
    assert expected[0].name.endswith(".png") and expected[-1].suffix == ".webp"
