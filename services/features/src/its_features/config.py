"""Settings of the features service: ``ITS_FEATURES_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field

from its_common.settings import BaseServiceSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"ITS_FEATURES_{name.upper()}")


class FeaturesSettings(BaseServiceSettings):
    """``ITS_FEATURES_*`` (and ``ITS_SYMBOLS``, ``REDIS_URL``, ``DATABASE_URL``...)."""

    SERVICE: ClassVar[str] = "features"

    group: str = Field("features", validation_alias=_env("group"), min_length=1)
    consumer: str = Field(
        "",
        validation_alias=_env("consumer"),
        description="consumer name in the group; empty = pod name / host-pid",
    )
    batch_entries: int = Field(
        200, ge=1, le=10_000, validation_alias=_env("batch_entries"), description="XREADGROUP COUNT"
    )
    block_ms: int = Field(
        500, ge=1, le=5_000, validation_alias=_env("block_ms"), description="XREADGROUP BLOCK"
    )
    grace_ms: int = Field(
        5_000,
        ge=0,
        le=120_000,
        validation_alias=_env("grace_ms"),
        description="how long after a minute's end a missing bar is waited for before the "
        "minute is announced with that symbol forward-filled",
    )
    clock: Literal["feed", "wall"] = Field(
        "feed",
        validation_alias=_env("clock"),
        description="'feed': market time is the newest trade time in the feed (its:last:trade:*), "
        "so a replayed or accelerated simulator day works; 'wall': the machine's clock",
    )
    cache_ttl_s: int = Field(
        300,
        ge=1,
        validation_alias=_env("cache_ttl_s"),
        description="TTL of its:features:latest:<SYMBOL>",
    )
    rebuild_on_start: bool = Field(
        True,
        validation_alias=_env("rebuild_on_start"),
        description="rebuild the state from the current session's stored bars at start",
    )
