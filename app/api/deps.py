"""Dependencies routes declare; everything comes from ``app.state``, built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.jobs import JobRegistry
from app.pipeline import Pipeline
from retrieval.ingest import Ingestor


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingestor
    return ingestor


def _jobs(request: Request) -> JobRegistry:
    jobs: JobRegistry = request.app.state.jobs
    return jobs


def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


SettingsDep = Annotated[Settings, Depends(_settings)]
PipelineDep = Annotated[Pipeline, Depends(_pipeline)]
IngestorDep = Annotated[Ingestor, Depends(_ingestor)]
RequestIdDep = Annotated[str, Depends(_request_id)]
JobsDep = Annotated[JobRegistry, Depends(_jobs)]
