"""Where scripts/test gets torch: the CPU build, without a multi-GB CUDA download or a hang.

Prints the pip arguments that install torch (one per line), or nothing when the right torch is
already installed. The rule, first match wins:

1. ``torch==TORCH`` already installed -> nothing to do (no network at all).
2. a CPU wheel of it lies in a local find-links folder (pip's config or PIP_FIND_LINKS) ->
   ``torch==TORCH`` from the configured sources (workplaces without internet keep one there).
3. macOS or Windows -> ``torch==TORCH`` from the default index (those wheels are CPU-only).
4. Linux, and PyTorch's CPU index answers one request within PROBE_TIMEOUT_S ->
   ``--extra-index-url CPU_INDEX torch==TORCH+cpu`` (the ``+cpu`` label forces the CPU build).
5. otherwise -> ``torch==TORCH`` from the default index, with a warning on stderr that this may
   be the CUDA build (several GB).

One probe, one attempt, a short timeout: an unreachable index costs seconds, not minutes.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

TORCH = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 5.0


def installed_torch() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def find_links_dirs() -> list[Path]:
    """Local folders pip searches for wheels (PIP_FIND_LINKS and pip's config)."""
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    values += [line.split("=", 1)[1].strip("'\" ") for line in out.splitlines()
               if line.split("=", 1)[0].endswith("find-links")]
    dirs = []
    for value in values:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_dir():
                dirs.append(path)
    return dirs


def local_cpu_wheel(dirs: list[Path], version: str = TORCH) -> Path | None:
    for folder in dirs:
        for wheel in sorted(folder.glob(f"torch-{version}+cpu-*.whl")):
            return wheel
    return None


def index_answers(url: str = CPU_INDEX, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request, no retry: does PyTorch's CPU index answer?"""
    if not url.startswith(("https://", "http://")):
        return False
    request = urllib.request.Request(f"{url}/torch/", method="HEAD")  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose(*, installed: str | None, local_wheel: Path | None, system: str,
           probe: Callable[[], bool], version: str = TORCH) -> list[str]:
    """The pip arguments for torch (see module docstring); [] when nothing is to be done."""
    if installed is not None and installed.split("+")[0] == version:
        return []
    if local_wheel is not None or system in ("Darwin", "Windows"):
        return [f"torch=={version}"]
    if probe():
        return ["--extra-index-url", CPU_INDEX, f"torch=={version}+cpu"]
    print(f"warning: {CPU_INDEX} did not answer within {PROBE_TIMEOUT_S:g} s; installing "
          f"torch=={version} from the default index, which on Linux is the CUDA build "
          "(several GB)", file=sys.stderr)
    return [f"torch=={version}"]


def main() -> int:
    args = choose(installed=installed_torch(), local_wheel=local_cpu_wheel(find_links_dirs()),
                  system=platform.system(), probe=index_answers)
    print("\n".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
