"""Pure, torch-free core shared by the service, the workers and the watcher.

Imports nothing of ours outside ``service.core`` and nothing heavy (numpy, Pillow, pydantic only).
"""
