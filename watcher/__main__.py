"""`python -m watcher [--polling] [--status] [--retry PATH]`: the same as `aat watch`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.core.errors import AatError
from service.settings import load_settings
from watcher.commands import configure_logging, retry, serve, status_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m watcher",
                                     description="Watch folders and upscale what lands in them.")
    parser.add_argument("--polling", action="store_true",
                        help="poll the folders (network drives) instead of OS events")
    parser.add_argument("--status", action="store_true", help="show the ledger and exit")
    parser.add_argument("--retry", metavar="PATH", type=Path,
                        help="submit failed files at PATH (file or folder) again and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(**({"watch_polling": True} if args.polling else {}))
        configure_logging(settings)
        if args.status:
            print("\n".join(status_lines(settings)))
            return 0
        if args.retry is not None:
            print(f"{retry(settings, args.retry)} file(s) will be submitted again")
            return 0
        serve(settings)
    except AatError as exc:  # the same one line and status as `aat watch`
        from service.cli.errors import report

        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
