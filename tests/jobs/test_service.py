"""JobService with the embedded executor and no GPU backend: intake, dedupe, results, tiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import png, small_params, wait_until

from service.core.errors import ImageError, JobError, ParamsError, PathError
from service.core.jobs import JobStatus, TargetSpec
from service.jobs.service import JobService, build_job_service


@pytest.fixture
def service(job_settings: Any) -> Iterator[JobService]:
    svc = build_job_service(job_settings())
    svc.start()
    yield svc
    svc.stop()


def _finished(svc: JobService, job_id: str) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, 30, "job to finish")


def test_a_job_runs_and_delivers_into_the_repo(service: JobService, tmp_path: Path) -> None:
    job, created = service.submit(png(), filename="rock.png", params=small_params(),
                                  target=TargetSpec(repo="game", path="tex/rock.png"))
    assert created and job.status == JobStatus.queued and job.params.seed == 7
    done = _finished(service, job.id)
    assert done.status == JobStatus.succeeded, done.error
    assert done.output.backend == "none" and (done.output.width, done.output.height) == (96, 96)
    delivered = tmp_path / "repo" / "tex" / "rock_x2.png"
    path, media = service.result(job.id)
    assert media == "image/png" and delivered.read_bytes() == path.read_bytes()
    assert done.progress == 1.0 and done.stages["deliver"].done == 1


def test_a_concrete_seed_is_drawn_and_recorded(service: JobService) -> None:
    job, _ = service.submit(png(), filename="a.png", params=small_params(seed=None))
    assert job.params.seed is not None
    assert service.get(job.id).params.seed == job.params.seed


def test_same_input_and_params_twice_is_one_job_and_one_delivery(
        service: JobService, tmp_path: Path) -> None:
    target = TargetSpec(repo="game", path="rock.png")
    first, created = service.submit(png(), filename="rock.png", params=small_params(),
                                    target=target)
    _finished(service, first.id)
    delivered = tmp_path / "repo" / "rock_x2.png"
    os.utime(delivered, ns=(10**9, 10**9))
    again, created_again = service.submit(png(), filename="rock.png", params=small_params(),
                                          target=target)
    assert created and not created_again and again.id == first.id
    jobs, _ = service.list(limit=10)
    assert [j.id for j in jobs] == [first.id]
    assert delivered.stat().st_mtime_ns == 10**9  # nothing rewritten
    keyed, _ = service.submit(png(seed=1), filename="b.png", params=small_params(),
                              idempotency_key="key-1")
    same, created_keyed = service.submit(png(seed=1), filename="c.png", params=small_params(),
                                         idempotency_key="key-1")
    assert same.id == keyed.id and not created_keyed


def test_a_reused_idempotency_key_with_another_image_or_params_is_refused(
        service: JobService) -> None:
    keyed, _ = service.submit(png(seed=1), filename="b.png", params=small_params(),
                              idempotency_key="key-2")

    def inputs() -> list[Path]:  # the keyed job may write its output meanwhile
        return [p for p in service.artifacts.files() if "inputs" in p.parts]

    stored = inputs()
    for data, params in ((png(seed=2), small_params()), (png(seed=1), small_params(seed=8))):
        with pytest.raises(ParamsError) as info:
            service.submit(data, filename="b.png", params=params, idempotency_key="key-2")
        assert info.value.code == "idempotency_key_reused" and "key-2" in info.value.message
    assert [j.id for j in service.list(limit=10)[0]] == [keyed.id]
    assert inputs() == stored  # the refused image was not stored


@pytest.mark.parametrize("data,code", [(b"", "image_empty"), (b"not an image", "image_corrupt"),
                                       (png()[:200], "image_truncated")])
def test_bad_images_are_refused_before_anything_is_stored(
        service: JobService, tmp_path: Path, data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as info:
        service.submit(data, filename="bad.png", params=small_params())
    assert info.value.code == code
    assert service.list(limit=5)[0] == []
    assert service.artifacts.files() == []


def test_a_bad_target_is_refused_before_anything_is_stored(service: JobService) -> None:
    with pytest.raises(PathError):
        service.submit(png(), filename="a.png", params=small_params(),
                       target=TargetSpec(repo="game", path="../escape.png"))
    assert service.list(limit=5)[0] == [] and service.artifacts.files() == []


def test_submit_path_is_confined_to_intake_roots_and_repos(
        job_settings: Any, tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (inbox / "a.png").write_bytes(png())
    (outside / "b.png").write_bytes(png(seed=3))
    (inbox / "sneaky.png").symlink_to(outside / "b.png")
    svc = build_job_service(job_settings(intake_roots=[inbox]))
    job, created = svc.submit_path(inbox / "a.png", filename=None, params=small_params())
    assert created and job.input.filename == "a.png"
    for bad in (outside / "b.png", inbox / "sneaky.png", inbox / ".." / "outside" / "b.png"):
        with pytest.raises(PathError) as info:
            svc.submit_path(bad, params=small_params())
        assert info.value.code == "path_escape", "the code the API answers for the same path"
        assert "AAT_INTAKE_ROOTS" in info.value.message
    with pytest.raises(PathError) as missing:
        svc.submit_path(inbox / "missing.png", params=small_params())
    assert missing.value.code == "path_not_found"
    assert svc.list(limit=5)[0] == [job], "nothing was stored for a refused path"


def test_result_before_success_is_not_ready(job_settings: Any) -> None:
    svc = build_job_service(job_settings())  # executor not started: the job stays queued
    job, _ = svc.submit(png(), filename="a.png", params=small_params())
    with pytest.raises(JobError) as info:
        svc.result(job.id)
    assert info.value.code == "not_ready"
    canceled = svc.cancel(job.id)
    assert canceled.status == JobStatus.canceled
    assert svc.cancel(job.id).status == JobStatus.canceled  # idempotent


def test_wait_for_change_returns_on_the_next_change(service: JobService) -> None:
    job, _ = service.submit(png(), filename="a.png", params=small_params())
    seen, version = service.wait_for_change(job.id, None, 0)
    statuses = {seen.status}
    while not seen.status.terminal:
        seen, new_version = service.wait_for_change(job.id, version, 10)
        assert new_version != version or seen.status.terminal
        version = new_version
        statuses.add(seen.status)
    assert JobStatus.succeeded in statuses


def test_tiles_prompts_and_rerun(service: JobService) -> None:
    job, _ = service.submit(png(), filename="a.png", params=small_params())
    _finished(service, job.id)
    tiles = service.tiles(job.id)
    assert len(tiles) == 4 and tiles[0]["w"] == 64
    assert service.set_tile_prompt(job.id, 2, "cracked granite")["prompt"] == "cracked granite"
    rerun = service.rerun(job.id, [2])
    assert rerun.id != job.id
    done = _finished(service, rerun.id)
    assert done.status == JobStatus.succeeded
    assert service.tiles(rerun.id)[2]["prompt"] == "cracked granite"
    with pytest.raises(JobError):
        service.rerun(job.id, [99])


def test_a_rerun_job_is_never_seen_without_its_tile_rows(service: JobService) -> None:
    """A runner that looks for the rerun at any moment finds it with its rows (the chosen
    tile's rerun count and prompt): it never finds the job alone and plans rows of its own,
    which would refine the chosen tile with its old seed and prompt (nothing would change)."""
    from sqlalchemy import event, exists, select

    from service.storage.tables import jobs, tiles

    job, _ = service.submit(png(), filename="a.png", params=small_params())
    _finished(service, job.id)
    service.set_tile_prompt(job.id, 2, "cracked granite")
    alone: list[str] = []

    def runner_looks(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TILES"):
            with service.store.engine.connect() as other:  # another connection, as a runner
                alone.extend(other.execute(select(jobs.c.id).where(
                    jobs.c.status == JobStatus.queued.value,
                    ~exists().where(tiles.c.job_id == jobs.c.id))).scalars())

    event.listen(service.store.engine, "after_cursor_execute", runner_looks)
    try:
        rerun = service.rerun(job.id, [2])
    finally:
        event.remove(service.store.engine, "after_cursor_execute", runner_looks)
    assert alone == []
    assert _finished(service, rerun.id).status == JobStatus.succeeded
    rows = service.store.get_tiles(rerun.id)
    assert [(t.rerun, t.prompt) for t in rows] == [
        (0, None), (0, None), (1, "cracked granite"), (0, None)]


def test_a_result_edited_since_delivery_is_not_overwritten(
        service: JobService, tmp_path: Path) -> None:
    target = TargetSpec(repo="game", path="rock.png")
    first, _ = service.submit(png(), filename="rock.png", params=small_params(), target=target)
    assert _finished(service, first.id).status == JobStatus.succeeded
    delivered = tmp_path / "repo" / "rock_x2.png"
    delivered.write_bytes(b"the artist painted over it")
    second, _ = service.submit(png(), filename="rock.png", params=small_params(seed=8),
                               target=target)
    done = _finished(service, second.id)
    assert done.status == JobStatus.failed and done.error.code == "delivery_conflict"
    assert delivered.read_bytes() == b"the artist painted over it"
    delivered.unlink()  # the artist moves the edit away: the next job delivers again
    third, _ = service.submit(png(), filename="rock.png", params=small_params(seed=9),
                              target=target)
    assert _finished(service, third.id).status == JobStatus.succeeded and delivered.exists()


def test_a_hand_made_file_where_the_result_goes_is_kept_unless_forced(
        service: JobService, tmp_path: Path) -> None:
    handmade = tmp_path / "repo" / "art" / "rock_x2.png"
    handmade.parent.mkdir(parents=True)
    handmade.write_bytes(b"the artist's own 2x version")
    target = TargetSpec(repo="game", path="art/rock.png")
    job, _ = service.submit(png(), filename="rock.png", params=small_params(), target=target)
    done = _finished(service, job.id)
    assert done.status == JobStatus.failed and done.error.code == "delivery_conflict"
    assert "overwrite" in done.error.message
    assert handmade.read_bytes() == b"the artist's own 2x version"
    forced, _ = service.submit(png(), filename="rock.png", params=small_params(),
                               target=target.model_copy(update={"overwrite": True}))
    assert _finished(service, forced.id).status == JobStatus.succeeded
    assert handmade.read_bytes().startswith(b"\x89PNG")


def test_a_cancel_that_arrives_while_the_result_is_written_does_not_hide_the_delivery(
        service: JobService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.jobs import orchestrator

    real_deliver = orchestrator.deliver

    def deliver_then_cancel(*args: Any, **kwargs: Any) -> Any:
        done = real_deliver(*args, **kwargs)
        service.store.request_cancel(kwargs["job_id"])  # the user clicks cancel just now
        return done

    monkeypatch.setattr(orchestrator, "deliver", deliver_then_cancel)
    job, _ = service.submit(png(), filename="rock.png", params=small_params(),
                            target=TargetSpec(repo="game", path="late/rock.png"))
    done = _finished(service, job.id)
    assert (tmp_path / "repo" / "late" / "rock_x2.png").exists()
    assert done.status == JobStatus.succeeded  # the file landed: the job says so
    assert done.output.delivered_path == "late/rock_x2.png"


def test_replace_naming_upscales_an_edited_file_in_place_again(
        service: JobService, tmp_path: Path) -> None:
    target = TargetSpec(repo="game", path="icons/gem.png", naming="replace")
    source = tmp_path / "repo" / "icons" / "gem.png"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(png(seed=1))
    first, _ = service.submit(source.read_bytes(), filename="gem.png", params=small_params(),
                              target=target)
    assert _finished(service, first.id).status == JobStatus.succeeded
    source.write_bytes(png(seed=2))  # the artist repaints the file, which is the next input
    second, _ = service.submit(source.read_bytes(), filename="gem.png", params=small_params(),
                               target=target)
    done = _finished(service, second.id)
    assert done.status == JobStatus.succeeded, done.error
    assert source.read_bytes() == service.result(second.id)[0].read_bytes()


def test_submit_path_with_an_overlong_name_is_a_path_error(
        job_settings: Any, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    svc = build_job_service(job_settings(intake_roots=[inbox]))
    with pytest.raises(PathError) as info:  # was a raw OSError (File name too long)
        svc.submit_path(inbox / ("a" * 300 + ".png"), params=small_params())
    assert info.value.code == "path_not_found"
