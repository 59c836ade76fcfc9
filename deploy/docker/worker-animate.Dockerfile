# syntax=docker/dockerfile:1
# Animate worker: Qwen-Image-Edit (diffusers), weights baked in; one sprite frame per job.
# Build context is the repository root:
#   docker build -f deploy/docker/worker-animate.Dockerfile -t <registry>/aat-animate:<version> .
# Pin the weights: --build-arg AAT_QWEN_EDIT_REVISION=<commit> (the first build prints it).
# Needs a 48 GB GPU class (the edit transformer is ~20 B parameters in bf16).
FROM pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime

ARG AAT_QWEN_EDIT_MODEL=Qwen/Qwen-Image-Edit
ARG AAT_QWEN_EDIT_REVISION=main
ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    AAT_WEIGHTS_DIR=/models \
    AAT_QWEN_EDIT_MODEL=${AAT_QWEN_EDIT_MODEL} \
    AAT_QWEN_EDIT_REVISION=${AAT_QWEN_EDIT_REVISION} \
    PIP_NO_CACHE_DIR=1

COPY deploy/docker/worker-constraints.txt /app/constraints.txt
COPY workers/animate/requirements.txt /app/workers/animate/requirements.txt
RUN pip install -r /app/workers/animate/requirements.txt -c /app/constraints.txt

COPY workers/__init__.py /app/workers/__init__.py
COPY workers/common/__init__.py workers/common/hub.py /app/workers/common/
COPY workers/animate/__init__.py workers/animate/weights.py /app/workers/animate/
# Gated repositories: docker build --secret id=hf_token,env=HF_TOKEN ... (never a layer)
RUN --mount=type=secret,id=hf_token,required=false python -m workers.animate.weights /models

COPY service/__init__.py /app/service/__init__.py
COPY service/core /app/service/core
COPY workers/common /app/workers/common
COPY workers/animate /app/workers/animate

ENV HF_HUB_OFFLINE=1
WORKDIR /app/workers/animate
CMD ["python", "-u", "/app/workers/animate/handler.py"]
