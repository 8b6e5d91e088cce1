"""The critic worker: the fine-tuned cross-encoders behind ``GET /health``, ``POST /score`` (the
sufficiency critic) and ``POST /rerank`` (the reranker, ``retrieval.rerank``).

It is a process of its own so the API stays free of torch and the models can sit on a GPU
(both pick CUDA when torch sees it). It serves either model or both; each is loaded before the
server binds, so ``/health`` never says ready for a model that is not there. Start it with
``covrag worker critic`` (``launch_critic_worker``), or directly as
``python -m workers.critic_server [--model-dir D] [--reranker-dir R] --port P``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from critic.cross_encoder import CrossEncoderModel
from critic.errors import CriticWeightsError
from critic.types import CriticInput
from retrieval.errors import RerankerUnavailable
from retrieval.rerank import TorchReranker
from workers.errors import WorkerError
from workers.process import WorkerHandle, WorkerSpec, find_detached, start_detached

#: Rounds per request: one query scores one round; the bound keeps a request from hogging the model.
MAX_ITEMS = 64
#: Passages per rerank request: the API reranks at most ``COVRAG_RERANK_CANDIDATES`` (≤ 100)
#: dense hits plus the keyword hits a hybrid search adds.
MAX_PASSAGES = 128
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


class RerankRequest(BaseModel):
    """One round's candidates, as ``RemoteReranker`` sends them."""

    question: str = Field(min_length=1)
    passages: list[str] = Field(min_length=1, max_length=MAX_PASSAGES)
    cosines: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        description="Each passage's dense cosine, in order."
    )

    @model_validator(mode="after")
    def _one_cosine_a_passage(self) -> RerankRequest:
        if len(self.cosines) != len(self.passages):
            raise ValueError(
                f"cosines: {len(self.cosines)} given for {len(self.passages)} passages"
            )
        return self


class RerankResponse(BaseModel):
    scores: list[float] = Field(description="Raw reranker scores, in request order.")
    version: str = Field(description="The reranker's version (its weights' hash).")
    compute_ms: float = Field(description="Time spent scoring, without waiting for the model.")


class Health(BaseModel):
    status: str
    model_dir: str | None
    device: str
    tau: float | None
    reranker_dir: str | None
    reranker_version: str | None


def create_critic_app(model_dir: Path | None, reranker_dir: Path | None = None) -> FastAPI:
    """The worker app with its models already loaded.

    Raises:
        CriticWeightsError: ``model_dir`` holds no critic.
        RerankerUnavailable: ``reranker_dir`` holds no reranker.
        WorkerError: neither is given.
    """
    if model_dir is None and reranker_dir is None:
        raise WorkerError("the critic worker needs a critic (--model-dir) or a reranker")
    model = None if model_dir is None else CrossEncoderModel.load(model_dir)
    reranker = None if reranker_dir is None else TorchReranker(reranker_dir)
    lock = threading.Lock()  # one forward pass at a time: torch already uses every core
    app = FastAPI(title="covrag critic worker")
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.get("/health")
    def health() -> Health:
        return Health(
            status="ok",
            model_dir=None if model_dir is None else str(model_dir),
            device=model.device if model else reranker.device if reranker else "cpu",
            tau=model.tau if model else None,
            reranker_dir=None if reranker_dir is None else str(reranker_dir),
            reranker_version=reranker.version if reranker else None,
        )

    @app.post("/score")
    def score(request: ScoreRequest) -> ScoreResponse:  # sync: FastAPI runs it in a thread
        if model is None:
            raise HTTPException(404, "this worker serves no critic (start it with --model-dir)")
        items = [CriticInput.from_json(item.model_dump()) for item in request.items]
        with lock:
            return ScoreResponse(scores=model.predict(items), tau=model.tau)

    @app.post("/rerank")
    def rerank(request: RerankRequest) -> RerankResponse:
        if reranker is None:
            raise HTTPException(404, "this worker serves no reranker (start it with --reranker)")
        with lock:
            start = time.perf_counter()
            scores = reranker.score(request.question, request.passages, request.cosines)
            compute_ms = (time.perf_counter() - start) * 1000
        return RerankResponse(scores=scores, version=reranker.version, compute_ms=compute_ms)

    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and what is wrong, without echoing the input: FastAPI's own body
    repeats it, and a NaN in it cannot be written as JSON (a 500 instead of the 422)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def launch_critic_worker(
    model_dir: Path | None,
    port: int,
    logs_dir: Path,
    python: Path | str = sys.executable,
    timeout_s: float = 120.0,
    host: str = "127.0.0.1",
    reranker_dir: Path | None = None,
) -> WorkerHandle:
    """Start the critic worker detached (or adopt ours on ``port``); wait for ``/health``.

    Raises:
        WorkerError: it exited (e.g. no trained model in ``model_dir``) or stayed unhealthy.
    """
    cmd = [str(python), "-m", "workers.critic_server", "--host", host, "--port", str(port)]
    for flag, folder in (("--model-dir", model_dir), ("--reranker-dir", reranker_dir)):
        if folder is not None:
            cmd += [flag, str(folder.resolve())]
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
    parser.add_argument("--model-dir", type=Path, help="The critic (a cross-encoder).")
    parser.add_argument("--reranker-dir", type=Path, help="The reranker (train-reranker's).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    args = parser.parse_args(argv)
    try:
        app = create_critic_app(args.model_dir, args.reranker_dir)
    except (CriticWeightsError, RerankerUnavailable, WorkerError) as exc:
        sys.exit(f"error: {exc}")  # one line for the log the launcher shows, no traceback
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
