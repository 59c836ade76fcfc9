"""Asset types through the job service: resolved at submit (stored with the reason, part of the
dedupe key), sheets found beside a repo source, and each type's path when the job runs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_helpers import small_params, wait_until
from PIL import Image

from service.core.errors import ParamsError
from service.core.jobs import JobStatus, TargetSpec
from service.jobs.service import JobService, build_job_service
from tests.core.asset_factory import normal_map, pixel_sprite
from tests.core.test_sheets import _aseprite


def encode(rgb: np.ndarray, alpha: np.ndarray | None = None, fmt: str = "PNG") -> bytes:
    arr = rgb if alpha is None else np.dstack([rgb, alpha])
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def service(job_settings: Any) -> Iterator[JobService]:
    svc = build_job_service(job_settings())
    svc.start()
    yield svc
    svc.stop()


def _finished(svc: JobService, job_id: str) -> Any:
    return wait_until(lambda: (j := svc.get(job_id)).status.terminal and j, 60, "job to finish")


def test_asset_type_is_resolved_at_submit_with_its_reason_and_keys_dedupe(
        service: JobService) -> None:
    data = encode(normal_map(48, 3))
    by_name, _ = service.submit(data, filename="wall_N.png", params=small_params())
    assert by_name.params.asset_type == "normal"
    assert by_name.params.asset_reason and "_n" in by_name.params.asset_reason
    by_content, _ = service.submit(data, filename="wall.png", params=small_params())
    assert by_content.params.asset_type == "normal"
    assert "unit vectors" in (by_content.params.asset_reason or "")
    forced, created = service.submit(data, filename="wall_N.png",
                                     params=small_params(asset_type="sprite"))
    assert created and forced.id != by_name.id and forced.params.asset_type == "sprite"
    again, created_again = service.submit(data, filename="wall_N.png", params=small_params())
    assert not created_again and again.id == by_name.id
    assert service.get(by_name.id).params.asset_type == "normal"  # stored in the job


def test_pixel_art_and_sheets_need_an_integer_scale_at_submit(service: JobService) -> None:
    rgb, alpha = pixel_sprite(16, 1)
    with pytest.raises(ParamsError, match="integer scale"):
        service.submit(encode(rgb, alpha), filename="hero.png", params=small_params(scale=1.5))
    with pytest.raises(ParamsError, match="does not divide") as info:
        service.submit(encode(rgb, alpha), filename="hero.png",
                       params=small_params(sheet="3x1", asset_type="sprite"))
    assert info.value.code == "sheet_invalid"


def test_sheet_json_beside_a_repo_source_is_used(service: JobService, tmp_path: Path) -> None:
    sheet = np.zeros((18, 56, 3), np.uint8)
    art = tmp_path / "repo" / "art"
    art.mkdir(parents=True)
    (art / "hero.png").write_bytes(encode(sheet))
    (art / "hero.json").write_text(_aseprite())
    job, _ = service.submit(encode(sheet), filename="hero.png", params=small_params(),
                            target=TargetSpec(repo="game", path="art/hero.png"))
    assert job.params.sheet is not None
    assert [list(c) for c in job.params.sheet.cells or []] == [
        [1, 1, 16, 16], [19, 1, 16, 16], [37, 1, 16, 16]]
    done = _finished(service, job.id)
    assert done.status == JobStatus.succeeded, done.error
    written = json.loads((art / "hero_x2.json").read_text())
    assert written["meta"]["image"] == "hero_x2.png"
    assert written["frames"]["hero 0.aseprite"]["frame"] == {"x": 2, "y": 2, "w": 32, "h": 32}
