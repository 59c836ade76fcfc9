# syntax=docker/dockerfile:1
# Caption worker: a Qwen VL model (Qwen3-VL-8B-Instruct by default), weights baked in.
# Build context is the repository root:
#   docker build -f deploy/docker/worker-caption.Dockerfile -t <registry>/aat-caption:<version> .
# Smaller GPU: --build-arg AAT_CAPTION_MODEL=Qwen/Qwen3-VL-4B-Instruct
FROM pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime

ARG AAT_CAPTION_MODEL=Qwen/Qwen3-VL-8B-Instruct
ARG AAT_CAPTION_REVISION=
ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    AAT_WEIGHTS_DIR=/models \
    AAT_CAPTION_MODEL=${AAT_CAPTION_MODEL} \
    AAT_CAPTION_REVISION=${AAT_CAPTION_REVISION} \
    PIP_NO_CACHE_DIR=1

COPY deploy/docker/worker-constraints.txt /app/constraints.txt
COPY workers/caption/requirements.txt /app/workers/caption/requirements.txt
RUN pip install -r /app/workers/caption/requirements.txt -c /app/constraints.txt

COPY workers/__init__.py /app/workers/__init__.py
COPY workers/common/__init__.py workers/common/hub.py /app/workers/common/
COPY workers/caption/__init__.py workers/caption/weights.py /app/workers/caption/
# Gated repositories: docker build --secret id=hf_token,env=HF_TOKEN ... (never a layer)
RUN --mount=type=secret,id=hf_token,required=false python -m workers.caption.weights /models

COPY service/__init__.py /app/service/__init__.py
COPY service/core /app/service/core
COPY workers/common /app/workers/common
COPY workers/caption /app/workers/caption

ENV HF_HUB_OFFLINE=1
WORKDIR /app/workers/caption
CMD ["python", "-u", "/app/workers/caption/handler.py"]
