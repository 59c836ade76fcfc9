"""Jobs: the service entry point (service.py), the orchestrator and GPU loop, runners and
executors (embedded threads or Celery). See docs/architecture/05-jobs-and-delivery.md."""
