"""The echo worker: a cheap, deterministic CPU stand-in for the GPU workers (tests, benchmarks)."""
