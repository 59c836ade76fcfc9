"""Asset-type detection: the naming table, the content rules and the labelled set's confusion
table (printed; run with ``-s`` to see it)."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.assets import (
    ASSET_TYPES,
    NAME_RULES,
    content_type,
    detect_asset_type,
    green_convention,
    native_pixel_size,
    type_from_name,
)
from tests.core.asset_factory import (
    illustration,
    labelled_set,
    normal_map,
    painted_sprite,
    pixel_sprite,
)


def confusion_table(rows: list[tuple[str, str]]) -> str:
    labels = list(ASSET_TYPES)
    width = max(len(t) for t in labels) + 1
    head = "true \\ detected".ljust(16) + "".join(t[:width].rjust(width) for t in labels)
    lines = [head]
    for truth in labels:
        counts = [sum(1 for t, p in rows if t == truth and p == pred) for pred in labels]
        if any(counts):
            lines.append(truth.ljust(16) + "".join(str(c).rjust(width) for c in counts))
    return "\n".join(lines)


def test_labelled_set_is_detected_right_and_prints_confusion_table() -> None:
    rows, wrong = [], []
    for label, name, rgb, alpha in labelled_set():
        got = detect_asset_type(name, rgb, alpha)
        rows.append((label, got.asset_type))
        assert got.reason, name
        if got.asset_type != label:
            wrong.append(f"{name}: {label} detected as {got.asset_type} ({got.reason})")
    print(f"\nasset-type auto-detection, {len(rows)} generated files "
          f"({sum(t == p for t, p in rows)} right)\n" + confusion_table(rows))
    assert not wrong, wrong
    assert {t for t, _ in rows} == set(ASSET_TYPES)  # every type is represented


@pytest.mark.parametrize(("name", "expected"), [
    ("T_Rock_N.png", ("normal", "_n")),
    ("rock_nrm.png", ("normal", "_nrm")),
    ("Rock_Normal_2K.png", ("normal", "_normal")),
    ("rock-normal-opengl.png", ("normal", "_normal_opengl")),
    ("rock_ORM.png", ("mask", "_orm")),
    ("rock_arm.tga", ("mask", "_arm")),
    ("rock_rough.png", ("mask", "_rough")),
    ("rock_metal.png", ("mask", "_metal")),
    ("rock_ao.png", ("mask", "_ao")),
    ("rock_mask.png", ("mask", "_mask")),
    ("rock_height.png", ("mask", "_height")),
    ("rock_h.png", ("mask", "_h")),
    ("rock_height_v2.png", ("mask", "_height")),
    ("gem_icon.png", ("ui", "_icon")),
    ("rock_albedo.png", ("texture", "_albedo")),
    ("hero.png", None),
    ("n.png", None),  # a one-word name is not a suffix
    ("button_on.png", None),  # "_on" is not "_n"
    ("hash.png", None),
])
def test_name_conventions(name: str, expected: tuple[str, str] | None) -> None:
    assert type_from_name(name) == expected


def test_every_documented_suffix_maps_to_its_type() -> None:
    for rule in NAME_RULES:
        for suffix in rule.suffixes:
            assert type_from_name(f"thing{suffix}.png") == (rule.asset_type, suffix)


def test_user_choice_wins_over_name_and_content() -> None:
    got = detect_asset_type("wall_n.png", normal_map(32, 1), requested="sprite")
    assert (got.asset_type, got.by, got.reason) == ("sprite", "user", "asked for sprite")
    with pytest.raises(ValueError, match="unknown asset type"):
        detect_asset_type("x.png", normal_map(32, 1), requested="photo")


def test_green_convention_of_generated_maps() -> None:
    assert green_convention(normal_map(96, 3, "opengl"))[0] == "opengl"
    assert green_convention(normal_map(96, 3, "directx"))[0] == "directx"
    assert detect_asset_type("panel.png", normal_map(96, 4, "directx")).hint("green") == "directx"
    assert detect_asset_type("x_normal_dx.png", normal_map(96, 4)).hint("green") == "directx"


def test_content_rules_say_why() -> None:
    kind, why = content_type(normal_map(64, 5))
    assert kind == "normal" and "unit vectors" in why
    rgb, alpha = painted_sprite(128, 1)
    assert content_type(rgb, alpha)[0] == "sprite"
    assert content_type(illustration(128, 1))[0] == "illustration"
    # pixel art drawn at 3x is still pixel art, and its native pixel size is found
    rgb, alpha = pixel_sprite(20, 3)
    big_rgb, big_a = (np.repeat(np.repeat(a, 3, 0), 3, 1) for a in (rgb, alpha))
    assert content_type(big_rgb, big_a)[0] == "pixel_art"
    assert native_pixel_size(big_rgb, big_a) == 3
    # a smooth painted sprite with the same size is not pixel art
    rgb, alpha = painted_sprite(24, 2)
    assert content_type(rgb, alpha)[0] == "sprite"


def test_the_guide_lists_every_naming_rule() -> None:
    from pathlib import Path

    guide = (Path(__file__).parents[2] / "docs/guide/asset-types.md").read_text()
    rows = {line.split("|")[1].strip(): line.strip() for line in guide.splitlines()
            if line.strip().startswith("| ") and line.count("|") == 3}
    for rule in NAME_RULES:
        row = rows[rule.asset_type]
        listed = {w.strip("`") for w in row.split("|")[2].split()}
        assert listed == set(rule.suffixes), rule.asset_type
