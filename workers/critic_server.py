"""The critic worker: the fine-tuned cross-encoder behind ``GET /health`` and ``POST /score``.

It is a process of its own so the API stays free of torch and the model can sit on a GPU
(``CrossEncoderModel.load`` picks CUDA when torch sees it). The model is loaded before the
server binds, so ``/health`` never says ready for a model that is not there. Start it with
``covrag worker critic`` (``launch_critic_worker``), or directly as
``python -m workers.critic_server --model-dir D --port P``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from critic.cross_encoder import CrossEncoderModel
from critic.types import CriticInput
from workers.process import WorkerHandle, WorkerSpec, find_detached, start_detached

#: Rounds per request: one query scores one round; the bound keeps a request from hogging the model.
MAX_ITEMS = 64
SPEC = WorkerSpec("critic", b"workers.critic_server", "critic-cross-encoder")
_REPO = Path(__file__).resolve().parents[1]


class RoundIn(BaseModel):
    """``CriticInput.to_json()`` on the wire (the cross-encoder reads no signals)."""

    question: str = Field(min_length=1)
    passages: list[str]
    answer: str = ""
    signals: dict[str, Any] = Field(default_factory=dict)


class ScoreRequest(BaseModel):
    items: list[RoundIn] = Field(min_length=1, max_length=MAX_ITEMS)


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="P(sufficient) per item, in request order.")
    tau: float = Field(description="The model's trained accept threshold.")


class Health(BaseModel):
    status: str
    model_dir: str
    device: str
    tau: float


def create_critic_app(model_dir: Path) -> FastAPI:
    """The worker app with the model already loaded (raises ``CriticWeightsError`` if absent)."""
    model = CrossEncoderModel.load(model_dir)
    lock = threading.Lock()  # one forward pass at a time: torch already uses every core
    app = FastAPI(title="covrag critic worker")

    @app.get("/health")
    def health() -> Health:
        return Health(status="ok", model_dir=str(model_dir), device=model.device, tau=model.tau)

    @app.post("/score")
    def score(request: ScoreRequest) -> ScoreResponse:  # sync: FastAPI runs it in a thread
        items = [CriticInput.from_json(item.model_dump()) for item in request.items]
        with lock:
            return ScoreResponse(scores=model.predict(items), tau=model.tau)

    return app


def launch_critic_worker(
    model_dir: Path,
    port: int,
    logs_dir: Path,
    python: Path | str = sys.executable,
    timeout_s: float = 120.0,
    host: str = "127.0.0.1",
) -> WorkerHandle:
    """Start the critic worker detached (or adopt ours on ``port``); wait for ``/health``.

    Raises:
        WorkerError: it exited (e.g. no trained model in ``model_dir``) or stayed unhealthy.
    """
    cmd = [str(python), "-m", "workers.critic_server", "--model-dir", str(model_dir.resolve())]
    cmd += ["--host", host, "--port", str(port)]
    # this checkout first on the path, so `-m` finds this app whatever the caller's directory
    path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return start_detached(
        SPEC, cmd, env, port=port, logs_dir=logs_dir, host=host, timeout_s=timeout_s
    )


def find_critic_worker(port: int, logs_dir: Path, host: str = "127.0.0.1") -> WorkerHandle | None:
    """A healthy critic worker we started on ``port``, else None (for ``--stop``)."""
    return find_detached(SPEC, port, logs_dir, host)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="covrag critic worker")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    args = parser.parse_args(argv)
    uvicorn.run(create_critic_app(args.model_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
