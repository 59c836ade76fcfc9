# Upscale worker: SDXL + ControlNet tile + IP-Adapter + LoRAs, weights baked in.
# Build context is the repository root:
#   docker build -f deploy/docker/worker-upscale.Dockerfile -t <registry>/aat-upscale:<version> .
FROM pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    AAT_WEIGHTS_DIR=/models \
    AAT_LORA_DIR=/runpod-volume/models/loras \
    PIP_NO_CACHE_DIR=1

COPY workers/upscale/requirements.txt /app/workers/upscale/requirements.txt
RUN pip install -r /app/workers/upscale/requirements.txt

# Weights first (their own layer, re-downloaded only when the manifest changes).
COPY workers/__init__.py /app/workers/__init__.py
COPY workers/common/__init__.py workers/common/hub.py /app/workers/common/
COPY workers/upscale/__init__.py workers/upscale/weights.py /app/workers/upscale/
RUN python -m workers.upscale.weights /models

# Code: the worker, its shared helpers and the torch-free contracts it speaks.
COPY service/__init__.py /app/service/__init__.py
COPY service/core /app/service/core
COPY workers/common /app/workers/common
COPY workers/upscale /app/workers/upscale

ENV HF_HUB_OFFLINE=1
WORKDIR /app/workers/upscale
# `python handler.py` without a job queue runs test_input.json once (image smoke test).
CMD ["python", "-u", "/app/workers/upscale/handler.py"]
