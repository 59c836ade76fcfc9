"""A real S3-protocol server for tests: ``moto_server`` (PyPI ``moto[server]``), one process.

Why moto: docs/decisions/0005-s3-artifact-store-and-its-test-server.md.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from proc_helpers import ServiceProcess, free_port


class S3Server:
    """``moto_server`` (PyPI moto[server]) listening on ``host``; in-memory buckets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.port = free_port(host)
        self.host = host
        self.endpoint_url = f"http://{host}:{self.port}"
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.process = ServiceProcess([exe, "-H", host, "-p", str(self.port)], scrub=False,
                                      ready_url=f"{self.endpoint_url}/moto-api/", timeout=30,
                                      stop_timeout=10).start()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def make_bucket(self) -> str:
        name = f"aat-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.stop()
