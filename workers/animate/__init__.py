"""The animate worker: Qwen-Image-Edit poses of a sprite (see docs/architecture/11-animate.md)."""
