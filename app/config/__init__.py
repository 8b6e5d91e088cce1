"""covrag's settings: a tree of groups, each a pydantic-settings model whose fields read the
``COVRAG_*`` variables (or ``.env`` lines) their aliases name.

Every variable is documented in docs/configuration.md, which scripts/settings_table.py writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from app.config.group import Group
from app.config.parts import (
    CriticSettings,
    EmbedderSettings,
    GeneratorSettings,
    RerankerSettings,
    StoreSettings,
)
from app.config.process import (
    AuthSettings,
    CacheSettings,
    ClientSettings,
    JobSettings,
    RedisSettings,
    ServerSettings,
    WorkerSettings,
)
from app.config.requests import CalibrationSettings, CollectionSettings, LimitSettings

__all__ = [
    "AuthSettings",
    "CacheSettings",
    "CalibrationSettings",
    "ClientSettings",
    "CollectionSettings",
    "CriticSettings",
    "EmbedderSettings",
    "GeneratorSettings",
    "Group",
    "JobSettings",
    "LimitSettings",
    "RedisSettings",
    "RerankerSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "Variable",
    "WorkerSettings",
    "get_settings",
    "variables",
]


class Settings(BaseModel):
    """Runtime configuration, one group per concern. ``Settings(critic={"kind": "off"})`` sets
    fields over what the environment says; ``settings.updated(...)`` derives a variant."""

    model_config = ConfigDict(extra="forbid")

    store: StoreSettings = Field(default_factory=StoreSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    reranker: RerankerSettings = Field(default_factory=RerankerSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    collections: CollectionSettings = Field(default_factory=CollectionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    critic: CriticSettings = Field(default_factory=CriticSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @classmethod
    def groups(cls) -> dict[str, type[Group]]:
        """Each group's class by its field name, in declaration order."""
        return {
            name: field.annotation
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Group)
        }

    @field_validator("*", mode="before")
    @classmethod
    def _over_the_environment(cls, value: object, info: ValidationInfo) -> object:
        """A group given as a mapping is read from the environment with those fields on top,
        so code names only what it sets; an unknown name is refused, not ignored."""
        if not isinstance(value, Mapping):
            return value
        group = cls.groups()[info.field_name or ""]
        unknown = sorted(set(value) - group.model_fields.keys())
        if unknown:
            raise ValueError(f"{info.field_name} has no setting {', '.join(unknown)}")
        return group(**value)

    def updated(self, **changes: Mapping[str, object]) -> Settings:
        """A copy with some fields changed and validated, the rest kept (not re-read from the
        environment): ``settings.updated(generator={"urls": [url]})``."""
        unknown = sorted(changes.keys() - self.groups().keys())
        if unknown:
            raise ValueError(f"no settings group {', '.join(unknown)}")
        return Settings(
            **{
                name: {**dict(getattr(self, name)), **changes[name]}
                if name in changes
                else getattr(self, name)
                for name in self.groups()
            }
        )


class Variable(NamedTuple):
    """One environment variable and the field it reaches: ``settings.<group>.<field>``."""

    name: str
    group: str
    field: str
    info: FieldInfo


def variables() -> Iterator[Variable]:
    """Every ``COVRAG_*`` variable, group by group in declaration order."""
    for group_name, group in Settings.groups().items():
        for field_name, info in group.model_fields.items():
            if not isinstance(info.validation_alias, str):
                raise TypeError(f"{group.__name__}.{field_name} names no variable")
            yield Variable(info.validation_alias, group_name, field_name, info)


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, built once per process (tests build their own)."""
    return Settings()
