"""`aat upscale` end to end on real files: the installed console script in a subprocess for the
main paths, and the same Typer app in-process for the many error cases (2 CPUs are shared)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from image_factory import bomb_png, encode, noise
from PIL import Image
from typer.testing import CliRunner

from service import cli

ROOT = Path(__file__).resolve().parents[1]
AAT = shutil.which("aat", path=str(Path(sys.executable).parent)) or "aat"
SPRITE = ROOT / "examples" / "sprite.png"
STONE = ROOT / "examples" / "stone-tileable.png"


def aat(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AAT_")}
    return subprocess.run([AAT, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def aat_inproc(*args: str | Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    """The same `aat` app in this process (exit code, stdout and stderr kept apart)."""
    for key in [k for k in os.environ if k.startswith("AAT_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli._assemble(), [str(a) for a in args])


PROGRESS_LINE = re.compile(r"^\S+(?: \d+/\d+)? +\d+%\s+[\d.]+s$")  # "decode  16%  0.1s"


def without_progress(stderr: str) -> str:
    """stderr without the plain progress lines `aat upscale` prints when it is not a
    terminal: what is left must be the one error line."""
    return "\n".join(ln for ln in stderr.splitlines() if not PROGRESS_LINE.match(ln)).strip()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".aat-tmp"))


def test_readme_command_upscales_the_example_sprite_keeping_alpha(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = aat("upscale", "examples/sprite.png", "-o", out, "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "with alpha" in result.stdout
    im = Image.open(out)
    assert im.format == "PNG" and im.mode == "RGBA" and im.size == (192, 192)
    alpha = np.asarray(im)[:, :, 3]
    assert alpha[0, 0] == 0 and alpha[96, 96] == 255
    assert "upscaler=realesr-animevideov3" in im.getexif()[0x010E]  # Real-ESRGAN ran
    # ncnn's own bare "0.00%" per tile is not printed; the command's progress lines are its own
    assert not re.search(r"^\s*\d+\.\d\d%\s*$", result.stdout + result.stderr, re.M), result.stderr
    assert leftovers(tmp_path) == []


def test_size_options_and_output_format_from_suffix(tmp_path: Path) -> None:
    webp = tmp_path / "gem.webp"
    assert aat("upscale", SPRITE, "-o", webp, "--width", "150", "--upscaler", "lanczos",
               "--quality", "100").returncode == 0
    im = Image.open(webp)
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (150, 150)
    jpg = tmp_path / "gem.jpg"
    result = aat("upscale", SPRITE, "-o", jpg, "--height", "120", "--upscaler", "anime4k")
    assert result.returncode == 0, result.stderr
    assert Image.open(jpg).format == "JPEG" and "no alpha" in result.stderr + result.stdout
    tga = tmp_path / "gem.tga"
    assert aat("upscale", SPRITE, "-o", tga, "--scale", "1.5").returncode == 0
    assert Image.open(tga).mode == "RGBA" and Image.open(tga).size == (144, 144)


def test_tileable_texture_with_tiles_and_seam_fix(tmp_path: Path) -> None:
    out = tmp_path / "stone.png"
    result = aat("upscale", STONE, "-o", out, "--scale", "3", "--tileable", "--tile-size",
                 "128", "--overlap", "32", "--seam-fix", "band", "--upscaler", "realesrgan")
    assert result.returncode == 0, result.stderr
    px = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert px.shape == (384, 384, 3)
    # the wrap edge is no harsher than the columns next to it
    edge = np.abs(px[:, 0] - px[:, -1]).mean()
    inner = np.abs(px[:, 1:9] - px[:, 0:8]).mean()
    assert edge <= 2 * inner


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    png = encode(Image.fromarray(noise(64, 64)), "PNG")
    return {
        "empty": (b"", "image_empty"),
        "truncated": (png[: len(png) // 2], "image_truncated"),
        "text": (b"# notes\nnot an image at all\n", "image_corrupt"),
        "bomb": (bomb_png(60_000), "image_bomb"),
        "tiff": (encode(Image.fromarray(noise(8, 8)), "TIFF"), "image_unsupported"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_one_line_error_and_nothing_written(tmp_path: Path, case: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data, code = _bad_inputs()[case]
    src = tmp_path / "in.png"
    src.write_bytes(data)
    out = tmp_path / "out.png"
    result = aat_inproc("upscale", src, "-o", out, cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2
    lines = without_progress(result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0]  # the last thing said
    assert not out.exists() and leftovers(tmp_path) == []


def test_failure_leaves_an_existing_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"previous good result")
    before = out.stat().st_mtime_ns
    src = tmp_path / "in.png"
    png = encode(Image.fromarray(noise(32, 32)), "PNG")
    src.write_bytes(png[:-40])
    result = aat("upscale", src, "-o", out)
    assert result.returncode == 2 and "image_truncated" in result.stderr
    assert out.read_bytes() == b"previous good result" and out.stat().st_mtime_ns == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--scale", "9"], "invalid_params", "--scale"),
    (["--tile-size", "256", "--overlap", "300"], "invalid_params", "overlap"),
    (["--seam-fix", "zigzag"], "invalid_params", "--seam-fix"),
    (["--upscaler", "magic"], "invalid_params", "magic"),
    (["--scale", "2", "--width", "100"], "invalid_params", "either scale or width"),
    (["--backend", "cloud"], "invalid_params", "--backend none, runpod or local"),
    (["--lora", "detail:strong"], "invalid_params", "--lora"),
    (["--format", "gif"], "invalid_params", "--format: "),
])
def test_bad_options(tmp_path: Path, args: list[str], code: str, words: str,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.png"
    result = aat_inproc("upscale", SPRITE, "-o", out, *args, cwd=tmp_path,
                        monkeypatch=monkeypatch)
    assert result.exit_code == 2
    line = without_progress(result.stderr)
    assert line.startswith(f"error [{code}]") and words in line and "\n" not in line
    assert not out.exists()


def test_output_suffix_we_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.bmp"
    result = aat_inproc("upscale", SPRITE, "-o", out, cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2
    assert without_progress(result.stderr).startswith("error [invalid_params]")
    assert ".png" in result.stderr and not out.exists()


@pytest.mark.parametrize(("name", "args", "words"), [
    ("out.exe", [], "cannot write .exe files; name the output with one of .png, .webp, .jpg, .jpeg, .tga"),
    ("out", [], "cannot write a file without a suffix"),
    ("out.gif", [], "cannot write .gif files"),  # read, never written
    ("out.jpg", ["--format", "png"], "--format png does not match the output name out.jpg"),
])
def test_an_output_name_that_would_lie_about_its_bytes_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, args: list[str],
        words: str) -> None:
    out = tmp_path / name
    result = aat_inproc("upscale", SPRITE, "-o", out, *args, cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and result.stderr.startswith("error [invalid_params]")
    assert words in result.stderr and "\n" not in result.stderr.strip()
    assert os.listdir(tmp_path) == []  # nothing written, not even a temp file


def test_output_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.png"
    result = aat_inproc("upscale", SPRITE, "-o", out, "--width", "16384", "--height", "20000",
                        cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "invalid_params" in result.stderr  # params cap a side
    (tmp_path / "aat.toml").write_text("max_output_side = 150\n")
    result = aat_inproc("upscale", SPRITE, "-o", out, "--scale", "2", cwd=tmp_path,
                        monkeypatch=monkeypatch)
    assert result.exit_code == 2
    assert without_progress(result.stderr).startswith("error [output_too_large]")
    assert not out.exists()


def test_missing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = aat_inproc("upscale", tmp_path / "nope.png", "-o", tmp_path / "o.png",
                        cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and result.stderr.startswith("error [path_not_found]")
    result = aat_inproc("upscale", SPRITE, "-o", tmp_path / "no" / "such" / "o.png",
                        cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_upscalers_lists_what_runs_here() -> None:
    result = aat("upscalers")
    assert result.returncode == 0
    assert "lanczos" in result.stdout and "auto -> realesrgan" in result.stdout


def test_16_bit_png_output_round_trips(tmp_path: Path) -> None:
    grey = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)
    src = tmp_path / "height.png"
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    src.write_bytes(buf.getvalue())
    out = tmp_path / "height-2x.png"
    result = aat("upscale", src, "-o", out, "--scale", "2")
    assert result.returncode == 0, result.stderr
    im = Image.open(out)
    assert im.mode.startswith("I;16") and im.size == (64, 64)
    assert int(np.asarray(im).max()) > 255 * 60


def test_animated_gif_uses_the_first_frame_with_a_warning(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:])
    out = tmp_path / "anim.png"
    result = aat_inproc("upscale", src, "-o", out, "--upscaler", "lanczos", cwd=tmp_path,
                        monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert "warning: GIF has 3 frames; only the first frame is used" in result.stderr
    px = np.asarray(Image.open(out).convert("RGB"))
    assert px.shape == (32, 32, 3) and px[16, 16, 0] > 150 and px[16, 16, 2] < 50
