"""The one logging setup: text or JSON lines, the job id as a field of every record logged
while a job runs (also from its asyncio tasks and worker threads), installed once."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from service.core.logs import configure_logging, job_context


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_job_id_from_the_context(restore_root: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    log = logging.getLogger("service.jobs.test")

    async def stage() -> None:
        log.info("in a task")
        await asyncio.to_thread(log.info, "in a worker thread")

    with job_context("j_0123456789abcdef01234567"):
        log.info("claimed %s", "by r1")
        asyncio.run(stage())
    log.warning("outside any job")
    log.info("explicit", extra={"job_id": "j_other"})
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["claimed by r1", "in a task",
                                               "in a worker thread", "outside any job",
                                               "explicit"]
    assert [r.get("job_id") for r in records] == ["j_0123456789abcdef01234567"] * 3 + [
        None, "j_other"]
    assert {r["level"] for r in records} == {"INFO", "WARNING"}
    assert all(r["logger"] == "service.jobs.test" and r["ts"].endswith("+00:00")
               for r in records)


def test_text_lines_and_one_handler_however_often_it_is_called(
        restore_root: logging.Logger) -> None:
    first = io.StringIO()
    configure_logging("INFO", "text", stream=first)
    out = io.StringIO()
    configure_logging("DEBUG", "text", stream=out)  # replaces, never adds a second handler
    log = logging.getLogger("watcher.test")
    with job_context("j_abc"):
        log.debug("tile %d refined", 3)
    log.error("boom")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and first.getvalue() == ""
    assert lines[0].endswith("DEBUG watcher.test: tile 3 refined [job j_abc]")
    assert lines[1].endswith("ERROR watcher.test: boom")
    logging.getLogger("httpx").info("HTTP Request: GET /v1/jobs")  # chatty: shown at DEBUG
    assert "HTTP Request" in out.getvalue()
    configure_logging("INFO", "text", stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET /v1/jobs/2")
    assert "/v1/jobs/2" not in out.getvalue()
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")
