"""Benchmark: what `aat --help` (and one command's help) costs next to starting Python.

Each round runs, in this order, ``python -c pass``, ``python -m service.cli --help`` and
``python -m service.cli upscale --help`` as fresh processes (bytecode caches written and warm,
as for an installed package), and the medians are printed side by side with their ratio to
bare Python. Alternating the three keeps a busy machine's load from favouring one of them.

Run: .venv/bin/python bench/cli_startup.py [--rounds 15]
The last line printed is one JSON object with python_s, help_s, upscale_help_s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python_s": ["-c", "pass"],
    "help_s": ["-m", "service.cli", "--help"],
    "upscale_help_s": ["-m", "service.cli", "upscale", "--help"],
}


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    for case in CASES.values():  # warm the bytecode caches once
        _run(case, env)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            times[name].append(_run(case, env))
    result = {name: round(statistics.median(values), 4) for name, values in times.items()}
    result["help_vs_python"] = round(result["help_s"] / result["python_s"], 2)
    result["upscale_help_vs_python"] = round(result["upscale_help_s"] / result["python_s"], 2)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(f"python -c pass        {result['python_s']:.3f} s")
    print(f"aat --help            {result['help_s']:.3f} s  ({result['help_vs_python']}x)")
    print(f"aat upscale --help    {result['upscale_help_s']:.3f} s  "
          f"({result['upscale_help_vs_python']}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
