# syntax=docker/dockerfile:1
# astrodask GPU image: `astrodask`, `dask scheduler`, `dask worker` and
# `dask cuda worker` (the `gpu` extra) with TensorFlow's CUDA libraries.
# Build from the repository root:
#   docker build -f deploy/docker/gpu.Dockerfile -t astrodask:gpu .
# The CUDA base only has to provide a CUDA 12 runtime and a driver-compatible
# layout; the libraries TensorFlow needs come from `tensorflow[and-cuda]`.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}
# dask-cuda pins dask and distributed (through rapids-dask-dependency); left
# free, pip pairs the newest dask with a years-old dask-cuda (0.18) instead.
ARG DASK_CUDA_VERSION=26.10

ENV DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TF_FORCE_GPU_ALLOW_GROWTH=true

# Ubuntu 22.04 ships Python 3.11 in its universe component.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && useradd --create-home --uid 1000 --user-group astrodask

WORKDIR /tmp/astrodask-src
COPY pyproject.toml README.md ./
COPY astrodask ./astrodask
RUN pip install '.[gpu]' "dask-cuda[cu12]==${DASK_CUDA_VERSION}.*" 'tensorflow[and-cuda]' \
    && rm -rf /tmp/astrodask-src
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/astrodask-entrypoint
COPY deploy/docker/dask.yaml /etc/dask/astrodask.yaml

USER 1000:1000
WORKDIR /home/astrodask
EXPOSE 8786 8787 8788
ENTRYPOINT ["tini", "-g", "--", "astrodask-entrypoint"]
CMD ["--help"]
