"""``GET /readyz``'s body."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReadyOut(BaseModel):
    status: str = Field(
        description="ready; degraded (ready, but a shared worker such as the generator is "
        "down: /v1/query answers 503 meanwhile); or unavailable"
    )
    checks: dict[str, str] = Field(description="Per dependency: ok, or what failed.")
    required: list[str] = Field(description="The checks that decide readiness.")
