"""A tile's display state (service.core.jobs.tile_state) from its row's status and its job's."""

from __future__ import annotations

import pytest

from service.core.jobs import TILE_STATES, tile_state


@pytest.mark.parametrize(("status", "job", "state"), [
    ("pending", "queued", "queued"),
    ("captioning", "running", "captioning"),
    ("refining", "running", "refining"),
    ("refined", "running", "done"),
    ("cached", "running", "cached"),
    # the job ended before the tile was done: the tile says how, never "queued"
    ("refining", "canceled", "canceled"),
    ("captioning", "canceled", "canceled"),
    ("pending", "canceled", "canceled"),
    ("refined", "canceled", "done"),
    ("cached", "canceled", "cached"),
    ("refining", "failed", "failed"),
    ("pending", "failed", "failed"),
    ("refined", "failed", "done"),
    ("pending", "succeeded", "done"),  # succeeded without a GPU: nothing was refined
    (None, "running", "queued"),
])
def test_tile_state(status: str | None, job: str, state: str) -> None:
    assert tile_state(status, job) == state
    assert state in TILE_STATES
