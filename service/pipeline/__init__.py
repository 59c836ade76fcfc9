"""The image pipeline shared by `aat upscale` and the job runner, one module per noun.

- :mod:`~service.pipeline.prepare` — pre-upscale to the target size, plan the tiles
  (``prepare``, ``Prepared``); :mod:`~service.pipeline.pre_cache` keeps slow pre-upscales;
  :mod:`~service.pipeline.assets` holds the asset types' own base paths (normal maps, masks,
  pixel art, sheets cell by cell).
- :mod:`~service.pipeline.stages` — the stage plan per image (``stage_plan``: the seam where
  asset types plug in) and ``run_stages``: caption → refine → seam fix → blend.
- :mod:`~service.pipeline.refine` — the concurrent refine loop on a ``GpuBackend``, with its
  tile cache keys and per-tile seeds.
- :mod:`~service.pipeline.assembly` — blend, colour fix, seam-fix composite, alpha
  (``finish``, ``Assembly`` for streaming rows).
- :mod:`~service.pipeline.observer` — the one ``PipelineObserver`` that hears progress, remote
  job ids (for resuming) and cost.

Callers own the effects around it: reading and decoding the input, choosing the backend
(:func:`service.backends.factory.make_backend`), encoding and writing the result.
"""
