#!/usr/bin/env python
"""Write the REST API's OpenAPI document to docs/api/openapi.json (the plugins' contract).

Usage: ``python scripts/export_openapi.py`` (write) or ``python scripts/export_openapi.py
--check`` (exit 1 when the file is stale). The document does not depend on settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "api" / "openapi.json"


def render() -> str:
    """The OpenAPI document as stable, indented JSON text."""
    sys.path.insert(0, str(ROOT))
    from service.api.app import create_app
    from service.settings import Settings

    app = create_app(Settings(backend="none"), job_service=None)
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale; run python scripts/export_openapi.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
