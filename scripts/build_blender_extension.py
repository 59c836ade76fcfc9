#!/usr/bin/env python3
"""Validate and build the Blender extension zip into ``dist/``.

Uses Blender itself when ``blender`` is on PATH (``blender --command extension build``), else
the extension CLI shipped inside the ``bpy`` wheel (``blender_ext.py``), which runs under plain
Python. Prints the path of the zip to install with Edit > Preferences > Get Extensions >
Install from Disk.

    .venv/bin/python scripts/build_blender_extension.py [--output-dir dist]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "plugins/blender/ai_assets_toolbox"


def extension_cli() -> list[str]:
    """The command that runs Blender's extension CLI here."""
    blender = shutil.which("blender")
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise SystemExit("neither `blender` on PATH nor the bpy wheel found: "
                         "install Blender or `pip install bpy==4.5.*`")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/"
                                                 "blender_ext.py"))
    if not found:
        raise SystemExit("the bpy wheel has no blender_ext.py; install Blender instead")
    return [sys.executable, str(found[-1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Blender extension zip.")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    cli = extension_cli()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for step in (["validate", str(SOURCE)],
                 ["build", "--source-dir", str(SOURCE), "--output-dir", str(args.output_dir)]):
        done = subprocess.run([*cli, *step], check=False)
        if done.returncode != 0:
            return done.returncode
    for zip_path in sorted(args.output_dir.glob("ai_assets_toolbox-*.zip")):
        print(zip_path)  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
