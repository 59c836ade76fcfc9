"""Tiny random worker components built from configs on the CPU, for tests and the CPU bench.

Kept out of the worker packages so they are never copied into a worker image."""
