"""Which artifact store a process uses: one rule, read from the settings.

Without ``AAT_ARTIFACTS_URL`` artifacts live under ``<data_dir>/artifacts`` (one host, or several
sharing a network file system). With ``AAT_ARTIFACTS_URL=s3://bucket/prefix`` they live in the
bucket and ``<data_dir>/artifacts`` becomes this host's cache of it.
"""

from __future__ import annotations

from service.core.errors import AatError
from service.settings import Settings
from service.storage.artifacts import ArtifactStore, LocalArtifactStore


def open_artifacts(settings: Settings) -> ArtifactStore:
    local_root = settings.data_dir / "artifacts"
    url = settings.artifacts_url
    if not url:
        return LocalArtifactStore(local_root)
    from service.storage.s3_artifacts import S3ArtifactStore

    secret = settings.s3_secret_access_key
    return S3ArtifactStore(
        url, local_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None)


def probe_artifacts(settings: Settings, artifacts: ArtifactStore | None = None
                    ) -> tuple[bool, str]:
    """Whether the artifact store (``artifacts``, else the one the settings name) accepts a
    write and gives it back, in words (`aat doctor`, ``GET /v1/ready``); never raises."""
    try:
        return True, (artifacts or open_artifacts(settings)).probe()
    except AatError as exc:
        return False, exc.message
    except Exception as exc:  # report, do not crash
        return False, (f"{settings.artifacts_url or settings.data_dir}: "
                       f"{str(exc).splitlines()[0][:200]}")
