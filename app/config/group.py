"""The base of every settings group."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Group(BaseSettings):
    """Each field reads the variable its alias names (environment or ``.env``), code sets it by
    its name. The aliases are the flat ``COVRAG_*`` names of old, so deployments keep working."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", validate_by_name=True)
