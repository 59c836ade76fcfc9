"""AI Assets Toolbox: the service (core maths, backends, jobs, storage, API, CLI)."""

__version__ = "0.1.0"
