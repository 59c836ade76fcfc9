# syntax=docker/dockerfile:1
# Upscale worker: SDXL + ControlNet tile + IP-Adapter + LoRAs, weights baked in.
# Build context is the repository root:
#   docker build -f deploy/docker/worker-upscale.Dockerfile -t <registry>/aat-upscale:<version> .
FROM pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime

# Commits of the three repositories not pinned in workers/upscale/weights.py (the first build
# without them stops and prints the commit each branch points at; pass those here).
ARG AAT_BASE_REVISION=main
ARG AAT_CONTROLNET_REVISION=main
ARG AAT_FAST_LORA_REVISION=main

ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    AAT_WEIGHTS_DIR=/models \
    AAT_LORA_DIR=/runpod-volume/models/loras \
    AAT_BASE_REVISION=${AAT_BASE_REVISION} \
    AAT_CONTROLNET_REVISION=${AAT_CONTROLNET_REVISION} \
    AAT_FAST_LORA_REVISION=${AAT_FAST_LORA_REVISION} \
    PIP_NO_CACHE_DIR=1

# A C compiler: torch.compile's inductor builds CPU-side helpers with it (AAT_COMPILE=1).
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

COPY deploy/docker/worker-constraints.txt /app/constraints.txt
COPY workers/upscale/requirements.txt /app/workers/upscale/requirements.txt
RUN pip install -r /app/workers/upscale/requirements.txt -c /app/constraints.txt

# Weights first (their own layer, re-downloaded only when the manifest changes).
COPY workers/__init__.py /app/workers/__init__.py
COPY workers/common/__init__.py workers/common/hub.py /app/workers/common/
COPY workers/upscale/__init__.py workers/upscale/weights.py /app/workers/upscale/
# Gated repositories: docker build --secret id=hf_token,env=HF_TOKEN ... (never a layer)
RUN --mount=type=secret,id=hf_token,required=false python -m workers.upscale.weights /models

# Code: the worker, its shared helpers and the torch-free contracts it speaks.
COPY service/__init__.py /app/service/__init__.py
COPY service/core /app/service/core
COPY workers/common /app/workers/common
COPY workers/upscale /app/workers/upscale

ENV HF_HUB_OFFLINE=1
WORKDIR /app/workers/upscale
# `python handler.py` without a job queue runs test_input.json once (image smoke test).
CMD ["python", "-u", "/app/workers/upscale/handler.py"]
