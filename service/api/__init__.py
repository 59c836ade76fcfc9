"""The REST API (FastAPI): ``create_app(settings, job_service=None)`` in :mod:`service.api.app`.

Routers are split by noun: ``jobs`` (+ ``events`` for SSE), ``models`` (LoRAs), ``health``,
``metrics``; ``auth``, ``problems`` and ``intake`` hold the cross-cutting parts.
"""
