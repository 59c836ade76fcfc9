"""`aat animate`: one sprite -> an animated spritesheet (+ Aseprite JSON, Godot .tres, preview).

    aat animate hero.png --motion walk --frames 8 -o hero_walk.png
    aat animate hero.png --motion walk -o hero_walk.png --regenerate 3   # its next attempt
    aat animate hero.png --motion walk -o hero_walk.png --regenerate 3 --attempt 2
    aat animate sprites/hero.png --repo game --motion run   # beside the source in the repo

Frames come from the edit backend the settings name (``AAT_ANIMATE_BACKEND``: our worker on
``RUNPOD_ANIMATE_ENDPOINT_ID``, or RunPod's public Qwen-Image-Edit endpoint, which needs an
S3 bucket for the image URL). Nothing is written until every frame is in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import numpy as np

    from service.core.animate import AnimateParams
    from service.pipeline.animate import Animation
    from service.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("animate")(animate)


def animate(
    sprite: Path = typer.Argument(..., metavar="SPRITE", help="The sprite (PNG/WebP with "
                                  "alpha); with --repo, its path inside the repo."),
    output: Path | None = typer.Option(None, "-o", "--output", help="The sheet to write "
                                       "(.png); its .json, .tres and .webp go beside it."),
    motion: str = typer.Option("walk", "--motion", "-m", help="idle, walk, run, attack, jump, "
                               "hit, death, or custom (with --text)."),
    text: str | None = typer.Option(None, "--text", help="Free text describing the motion."),
    frames: int = typer.Option(8, "--frames", "-n", help="Frames, 2-16."),
    facing: str = typer.Option("right", "--facing", help="right, left, front or back."),
    size: str | None = typer.Option(None, "--size", help="Cell size WxH (default: the "
                                    "sprite's)."),
    layout: str = typer.Option("row", "--layout", help="row or grid."),
    fps: int | None = typer.Option(None, "--fps", help="Frames per second (default: the "
                                   "motion's)."),
    loop: bool | None = typer.Option(None, "--loop/--no-loop", help="Default: the motion's."),
    name: str | None = typer.Option(None, "--name", help="Animation name in the metadata."),
    anchor: str = typer.Option("feet", "--anchor", help="feet (baseline) or centre."),
    key: str = typer.Option("#00ff00", "--key", help="Flat key colour the frames are drawn on."),
    style: str | None = typer.Option(None, "--style", help="Style words added to each prompt."),
    seed: int = typer.Option(0, "--seed", help="Seed; each frame derives its own."),
    regenerate: list[int] = typer.Option([], "--regenerate", "-r", help="Generate frame N "
                                         "(from 1) of the existing OUTPUT sheet again; repeat."),
    attempt: int | None = typer.Option(None, "--attempt", min=1, help="Which new seed "
                                       "--regenerate uses (default: the frame's next attempt, "
                                       "as the sheet's JSON records them; the same attempt "
                                       "gives the same frame)."),
    repo: str | None = typer.Option(None, "--repo", help="Deliver beside SPRITE inside this "
                                    "configured repo (AAT_REPOS) instead of -o."),
    edit_side: int = typer.Option(1024, "--edit-side", help="Longest side of the image the "
                                  "edit model sees (the cell scaled by whole pixels)."),
) -> None:
    """Animate SPRITE into a spritesheet.

    OUTPUT and its metadata are written only when every frame worked.
    """
    from service.core.animate import AnimateParams  # noqa: PLC0415

    params = _params(AnimateParams, motion=motion, motion_text=text, frames=frames,
                     facing=facing, frame_size=size, layout=layout, fps=fps, loop=loop,
                     name=name, anchor=anchor, key_colour=key, style=style, seed=seed)
    summary = asyncio.run(_run(sprite, output, params, regenerate, attempt, repo, edit_side))
    typer.echo(summary)


def _params(model: type[AnimateParams], **values: Any) -> AnimateParams:
    from pydantic import ValidationError  # noqa: PLC0415

    from service.core.errors import ParamsError  # noqa: PLC0415

    try:
        return model(**values)  # an unknown motion raises ParamsError itself
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "parameters"
        raise ParamsError(f"{where}: {err.get('msg')}", code="invalid_params") from None


async def _run(sprite: Path, output: Path | None, params: AnimateParams, regenerate: list[int],
               attempt: int | None, repo: str | None, edit_side: int) -> str:
    from service.backends.edit import open_edit_backend  # noqa: PLC0415
    from service.core.errors import ParamsError, PathError  # noqa: PLC0415
    from service.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    if (output is None) == (repo is None):
        raise ParamsError("give -o OUTPUT (a .png) or --repo NAME (beside the source)",
                          code="invalid_params")
    source_path = sprite
    if repo is not None:
        root = settings.repos.get(repo)
        if root is None:
            raise PathError(f"unknown repo {repo!r}; add it to AAT_REPOS", code="path_not_found")
        source_path = Path(root) / sprite
    if output is not None and output.suffix.lower() != ".png":
        raise ParamsError(f"OUTPUT {output.name} must end in .png", code="invalid_params")
    source = _load(source_path, settings)
    existing = _existing_cells(output, params) if regenerate else None
    backend = open_edit_backend(settings)
    try:
        from service.pipeline import animate as pipe  # noqa: PLC0415

        if existing is not None:
            cells, records = existing
            anim = await pipe.regenerate(source, params, backend, cells,
                                         [n - 1 for n in regenerate], attempt=attempt,
                                         records=records, edit_side=edit_side)
        else:
            anim = await pipe.animate(source, params, backend, edit_side=edit_side)
    finally:
        await backend.aclose()
    from service.core.naming import animation_tag  # noqa: PLC0415

    label = animation_tag(params)
    if repo is not None:
        written = _deliver(settings, repo, sprite, anim, label)
    else:
        assert output is not None
        written = _write(output, anim)
    worst = max(anim.distances)
    return (f"wrote {', '.join(written)} ({_changed(regenerate, params.frames)}"
            f"{params.frames} frames of {anim.prepared.cell[0]}x"
            f"{anim.prepared.cell[1]}, {params.animation_name()} at {params.cycle_fps()} fps, "
            f"palette distance max {worst:.3f}, loop distance {anim.loop_distance:.3f})"
            f"{_next_hint(regenerate, attempt, anim.attempts)}")


def _changed(regenerate: list[int], frames: int) -> str:
    """Which frames a ``--regenerate`` run generated and how many it kept as they were."""
    if not regenerate:
        return ""
    made = sorted(set(regenerate))
    kept = frames - len(made)
    return (f"frame{'s' if len(made) > 1 else ''} {', '.join(map(str, made))} generated again, "
            f"{kept} kept as they were; ")


def _next_hint(regenerate: list[int], attempt: int | None, attempts: list[int]) -> str:
    """How to get another frame: the seed is fixed by the attempt, which the JSON records."""
    if not regenerate:
        return ""
    if attempt is not None:
        return (f"\nregenerated with --attempt {attempt}; not it yet? the same command with "
                f"--attempt {attempt + 1} tries again")
    made = sorted(set(regenerate))
    which = ", ".join(f"frame {n} attempt {attempts[n - 1]}" for n in made)
    return (f"\nregenerated {which}; not it yet? the same command tries the next attempt "
            "(recorded in the sheet's JSON)")


def _load(path: Path, settings: Settings) -> np.ndarray:
    from service.core.errors import PathError  # noqa: PLC0415
    from service.core.imaging import load_image  # noqa: PLC0415
    from service.pipeline.animate import sprite_rgba  # noqa: PLC0415

    if not path.is_file():
        raise PathError(f"sprite {path} does not exist or is not a file", code="path_not_found")
    image = load_image(path.read_bytes(), limits=settings.image_limits(), filename=path.name)
    return sprite_rgba(image.rgb, image.alpha)


def _existing_cells(output: Path | None, params: AnimateParams
                    ) -> tuple[list[np.ndarray], list[tuple[int, int]] | None]:
    """The cells of the sheet being regenerated, cut where its Aseprite JSON says, and each
    frame's recorded ``(attempt, seed)`` (``None`` when the JSON records none)."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from service.core.errors import ParamsError, PathError  # noqa: PLC0415
    from service.core.frames import cut  # noqa: PLC0415
    from service.core.sheet_writers import recorded_frames  # noqa: PLC0415
    from service.core.sheets import read_cells  # noqa: PLC0415

    if output is None:
        raise ParamsError("--regenerate needs -o OUTPUT (the sheet to change)",
                          code="invalid_params")
    meta = output.with_suffix(".json")
    if not output.is_file() or not meta.is_file():
        raise PathError(f"--regenerate needs the existing {output.name} and {meta.name}",
                        code="path_not_found")
    with Image.open(output) as im:
        sheet = np.asarray(im.convert("RGBA"))
    text = meta.read_text(encoding="utf-8")
    _, rects = read_cells(meta.name, text, sheet.shape[0])
    if len(rects) != params.frames:
        raise ParamsError(f"{output.name} has {len(rects)} frames, not {params.frames}; give "
                          f"--frames {len(rects)}", code="invalid_params")
    return cut(sheet, rects), recorded_frames(text, len(rects))


def _write(output: Path, anim: Animation) -> list[str]:
    from service.core.atomic import atomic_write_set  # noqa: PLC0415
    from service.core.errors import DeliveryError, PathError  # noqa: PLC0415
    from service.pipeline.animate import outputs  # noqa: PLC0415

    if not output.parent.is_dir():
        raise PathError(f"output folder {output.parent} does not exist; create it first",
                        code="path_not_found")
    files = outputs(anim, output.stem)
    try:  # staged together, the sheet swapped in first: metadata never points at nothing
        atomic_write_set([(output.with_name(fname), data) for fname, data in files.items()])
    except OSError as exc:
        raise DeliveryError(f"could not write {output}: {exc.strerror or exc}") from exc
    return list(files)


def _deliver(settings: Settings, repo: str, sprite: Path, anim: Animation, label: str
             ) -> list[str]:
    from pathlib import PurePosixPath  # noqa: PLC0415

    from service.core.jobs import TargetSpec  # noqa: PLC0415
    from service.core.naming import animation_results  # noqa: PLC0415
    from service.pipeline.animate import outputs_at  # noqa: PLC0415
    from service.storage.game_repo import deliver_set  # noqa: PLC0415

    rel = PurePosixPath(sprite.as_posix())
    sheet = animation_results(rel.as_posix(), "suffix", anim.params)[0]
    files = outputs_at(anim, sheet.as_posix())
    by_ext = {Path(name).suffix: data for name, data in files.items()}
    done = deliver_set(settings, TargetSpec(repo=repo, path=rel.as_posix()), by_ext,
                       label=label, job_id="cli")
    return [d.rel for d in done]
