"""Weights are baked by content: commits, every named file present, tokens only as secrets.

The download itself needs the network (image build time); what it checks runs here on folders
laid out like a download.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.caption import weights as caption_weights
from workers.common import hub
from workers.upscale import weights as upscale_weights

COMP = hub.Component("org/model", "a" * 40, ("config.json", "unet/*.safetensors"), "m",
                     extras=("*.txt",))


def lay_out(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_complete_download_is_hashed(tmp_path: Path) -> None:
    folder = lay_out(tmp_path, {"config.json": b"{}", "unet/w.safetensors": b"x" * 9})
    hashes = hub.verify("m", COMP, folder)
    assert set(hashes) == {"config.json", "unet/w.safetensors"}  # extras are optional


@pytest.mark.parametrize(("files", "missing"), [
    ({"unet/w.safetensors": b"x"}, "config.json"),
    ({"config.json": b"", "unet/w.safetensors": b"x"}, "config.json"),  # empty = missing
    ({"config.json": b"{}", "unet/w.bin": b"x"}, "unet/*.safetensors"),
])
def test_a_missing_named_file_stops_the_build(tmp_path: Path, files: dict, missing: str) -> None:
    with pytest.raises(SystemExit) as info:
        hub.verify("m", COMP, lay_out(tmp_path, files))
    assert missing in str(info.value) and "refusing to bake" in str(info.value)


def test_a_branch_revision_stops_the_build_with_the_commit_to_pin(monkeypatch) -> None:
    monkeypatch.delenv("AAT_ALLOW_UNPINNED", raising=False)
    branch = hub.Component("org/model", "main", ("config.json",), "m")
    with pytest.raises(SystemExit) as info:
        hub.check_pinned("base", branch, "b" * 40)
    assert "b" * 40 in str(info.value) and "branch" in str(info.value)
    monkeypatch.setenv("AAT_ALLOW_UNPINNED", "1")
    hub.check_pinned("base", branch, "b" * 40)  # trying a model out: allowed, logged


def test_every_fixed_revision_in_the_manifests_is_a_commit() -> None:
    """The base checkpoint and ControlNet revisions come from build args (no commit of them
    could be confirmed offline); every other one is pinned here."""
    from_args = {"base", "controlnet", "fast_lora"}
    for name, comp in upscale_weights.MANIFEST.items():
        assert hub.is_commit(comp.revision) or name in from_args, name
    assert hub.is_commit(caption_weights.MANIFEST["caption"].revision)


def test_gated_repositories_read_the_build_secret(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "SECRET_FILE", tmp_path / "hf_token")
    assert hub.hub_token() is None
    (tmp_path / "hf_token").write_text("hf_secret\n")
    assert hub.hub_token() == "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert hub.hub_token() == "hf_env"
