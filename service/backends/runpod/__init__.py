"""The RunPod serverless backend, one module per noun.

- :mod:`~service.backends.runpod.client` — ``RunPodClient``: the HTTP layer for one endpoint
  (``/run``, ``/runsync``, ``/status``, ``/cancel``, ``/health``), HTTP retries, polling.
- :mod:`~service.backends.runpod.limits` — the per-endpoint in-flight limit.
- :mod:`~service.backends.runpod.backend` — ``RunPodBackend``, the ``GpuBackend`` port:
  contracts, tile retries, cancel on abort, accounting.
- :mod:`~service.backends.runpod.resume` — re-polling a RunPod job an earlier, killed attempt
  had already paid for (``RunPodBackend.resume``).
- :mod:`~service.backends.runpod.deploy` — provisioning: templates and serverless endpoints
  through the management REST API (``aat deploy runpod``).
"""

from service.backends.runpod.backend import RunPodBackend, request_key

__all__ = ["RunPodBackend", "request_key"]
