"""Mounts every router."""

from fastapi import APIRouter

from app.api.routes import calibration, collections, health, jobs, openai, query, retrieve

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(query.router)
api_router.include_router(retrieve.router)
api_router.include_router(collections.router)
api_router.include_router(calibration.router)
api_router.include_router(jobs.router)
api_router.include_router(openai.router)
