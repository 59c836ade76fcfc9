"""The SQLite ledger (real file, reopened as after a restart) and folder presets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.core.errors import NotFound, ParamsError
from watcher.ledger import Ledger
from watcher.presets import PresetCache, resolve


def test_ledger_survives_a_restart_and_tracks_each_version(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    src = tmp_path / "art" / "a.png"
    ledger = Ledger(db)
    ledger.record_version(src, tmp_path / "art", (10, 111), "s1", "v1", "fp")
    ledger.mark_submitted(src, "j_1", next_poll_at=0)
    ledger.mark_done(src, "a_x2.png", "outsha", tmp_path / "repo" / "a_x2.png")
    ledger.close()

    again = Ledger(db)  # as after a restart
    entry = again.get(src)
    assert entry is not None
    assert (entry.state, entry.job_id, entry.version_key, entry.output_path) == \
        ("done", "j_1", "v1", "a_x2.png")
    assert again.is_output(tmp_path / "repo" / "a_x2.png")
    assert again.is_output(tmp_path / "elsewhere.png", sha256="outsha")
    assert not again.is_output(tmp_path / "elsewhere.png", sha256="other")

    again.record_version(src, tmp_path / "art", (12, 222), "s2", "v2", "fp")  # changed file
    entry = again.get(src)
    assert entry is not None
    assert (entry.state, entry.job_id, entry.sha256) == ("pending", None, "s2")
    assert again.counts() == {"pending": 1, "submitted": 0, "done": 0, "failed": 0}
    again.close()


def test_failed_rows_keep_the_reason_and_retry_only_on_request(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "w.db")
    a = tmp_path / "art" / "sub" / "a.png"
    b = tmp_path / "art" / "b.png"
    ledger.record_failed_version(a, tmp_path / "art", (5, 1), "s", "v", "fp",
                                 "image_corrupt", "a.png could not be decoded")
    ledger.record_version(b, tmp_path / "art", (5, 1), "s", "vb", "fp")
    assert ledger.due("pending", time.time(), 10)[0].path == b  # failed rows are never due
    entry = ledger.get(a)
    assert entry is not None and entry.error_code == "image_corrupt"

    assert ledger.retry(tmp_path / "art" / "sub") == 1  # a folder retries what is below it
    entry = ledger.get(a)
    assert entry is not None
    assert (entry.state, entry.retry_gen, entry.error_code) == ("pending", 1, None)
    with pytest.raises(NotFound, match="aat watch --status"):
        ledger.retry(tmp_path / "art" / "nothing.png")
    ledger.close()


def test_service_outage_keeps_rows_pending_with_the_reason(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "w.db")
    a = tmp_path / "a.png"
    ledger.record_version(a, tmp_path, (5, 1), "s", "v", "fp")
    later = time.time() + 60
    ledger.mark_retry_later(a, later, "service_unavailable", "service unreachable")
    assert ledger.due("pending", time.time(), 10) == []
    assert [e.path for e in ledger.due("pending", later + 1, 10)] == [a]
    entry = ledger.get(a)
    assert entry is not None and entry.attempts == 1 and entry.state == "pending"
    ledger.mark_missing(a)
    assert ledger.counts()["pending"] == 0  # deleted files do not count
    ledger.close()


def test_presets_inherit_and_override(tmp_path: Path) -> None:
    (tmp_path / ".aat.toml").write_text(
        'scale = 4\nprompt = "stone"\nrepo = "game"\nnaming = "mirror"\nmirror_dir = "up"\n'
        'loras = ["moss:0.5", {name = "rock", weight = 1.5}]\n')
    sub = tmp_path / "props" / "metal"
    sub.mkdir(parents=True)
    (tmp_path / "props" / ".aat.toml").write_text('width = 512\nprompt = "steel"\ntileable = true\n')
    root_preset = resolve(tmp_path, tmp_path)
    assert root_preset.params.scale == 4 and root_preset.repo == "game"
    assert [(lo.name, lo.weight) for lo in root_preset.params.loras] == [("moss", 0.5), ("rock", 1.5)]
    deep = resolve(tmp_path, sub)
    assert (deep.params.width, deep.params.scale, deep.params.prompt) == (512, None, "steel")
    assert deep.params.tileable and deep.naming == "mirror" and deep.mirror_dir == "up"
    assert deep.fingerprint() != root_preset.fingerprint()


@pytest.mark.parametrize(
    ("text", "needle"),
    [("scale = 99\n", "scale"), ("naming = 'sideways'\n", "naming"),
     ("naming = 'mirror'\n", "mirror_dir"), ("strength = [\n", "not valid TOML"),
     ("bogus_knob = 1\n", "bogus_knob"), ("target_dir = '../out'\n", "relative"),
     ("loras = ['moss:lots']\n", "not a number")],
)
def test_bad_presets_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / ".aat.toml").write_text(text)
    with pytest.raises(ParamsError) as exc:
        resolve(tmp_path, tmp_path)
    assert needle in exc.value.message


def test_preset_cache_rereads_a_changed_preset(tmp_path: Path) -> None:
    cache = PresetCache()
    assert cache.get(tmp_path, tmp_path).params.scale == 2.0  # no preset: defaults
    preset = tmp_path / ".aat.toml"
    preset.write_text("scale = 3\n")
    assert cache.get(tmp_path, tmp_path).params.scale == 3
    preset.write_text("scale = 1.5\n")
    import os
    os.utime(preset, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert cache.get(tmp_path, tmp_path).params.scale == 1.5
