# The two commands of the README: `make run` and `make test`.
PY := .venv/bin
.PHONY: setup run test lint stop bench lock

setup:
	@bash scripts/setup.sh

## Install, start a vLLM CPU worker, ingest the demo corpus once, serve the API.
run: setup
	$(PY)/covrag worker vllm
	$(PY)/covrag ingest --demo --local  # before the server: in process
	$(PY)/covrag serve

## The whole test suite (starts its own vLLM CPU workers).
test: setup
	$(PY)/pytest

lint:
	$(PY)/ruff check .
	$(PY)/ruff format --check .
	$(PY)/mypy

## Stop the worker `make run` started.
stop:
	$(PY)/covrag worker stop

bench: setup
	$(PY)/python -m bench.run_foundation

## Regenerate requirements.lock (the API image's pinned, hashed dependencies) from pyproject.toml.
lock:
	@bash scripts/lock.sh
