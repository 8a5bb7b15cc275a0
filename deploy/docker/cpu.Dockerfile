# syntax=docker/dockerfile:1
# astrodask CPU image: `astrodask`, `dask scheduler` and `dask worker`.
# Build from the repository root (the build context must hold pyproject.toml):
#   docker build -f deploy/docker/cpu.Dockerfile -t astrodask:cpu .
FROM python:3.11-slim

# /opt/venv is the same path in the GPU image: `astrodask run` tells workers
# where the shipped model files are by their path on the client.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=3

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv \
    && useradd --create-home --uid 1000 --user-group astrodask

WORKDIR /tmp/astrodask-src
COPY pyproject.toml README.md ./
COPY astrodask ./astrodask
RUN pip install . \
    && rm -rf /tmp/astrodask-src
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/astrodask-entrypoint
COPY deploy/docker/dask.yaml /etc/dask/astrodask.yaml

USER 1000:1000
WORKDIR /home/astrodask
# 8786 scheduler, 8787 scheduler dashboard, 8788 worker dashboard
EXPOSE 8786 8787 8788
ENTRYPOINT ["tini", "-g", "--", "astrodask-entrypoint"]
CMD ["--help"]
