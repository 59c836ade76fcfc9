"""What a job runner hands to the orchestrator: its settings, stores and stop signal.

Kept apart from :mod:`service.jobs.runner` (which calls the orchestrator) so the orchestrator
can name these without importing the runner back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from service.core.errors import JobError
from service.settings import Settings
from service.storage.artifacts import ArtifactStore
from service.storage.job_store import SqlJobStore


class Interrupted(JobError):
    """The runner is shutting down; the job goes back to the queue."""

    code = "runner_stopping"
    drain = True  # tiles already in flight are finished and cached before stopping


@dataclass
class RunContext:
    """Everything a runner needs, built once per process."""

    settings: Settings
    store: SqlJobStore
    artifacts: ArtifactStore
    stopping: threading.Event = field(default_factory=threading.Event)

    def delivered_sha(self, repo: str, rel: str) -> str | None:
        """The sha256 this service last delivered to ``rel`` in ``repo`` (None: never)."""
        found = self.store.last_delivery(repo, rel)
        return found.sha256 if found is not None else None
