"""Settings of the features service: ``ITS_FEATURES_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from its_common.settings import BaseServiceSettings


class FeaturesSettings(BaseServiceSettings):
    """``ITS_FEATURES_*`` (and ``ITS_SYMBOLS``, ``REDIS_URL``, ``DATABASE_URL``...)."""

    SERVICE: ClassVar[str] = "features"
    model_config = SettingsConfigDict(env_prefix="ITS_FEATURES_")

    group: str = Field("features", min_length=1)
    consumer: str = Field(
        "",
        description="consumer name in the group; empty = pod name / host-pid",
    )
    batch_entries: int = Field(200, ge=1, le=10_000, description="XREADGROUP COUNT")
    block_ms: int = Field(500, ge=1, le=5_000, description="XREADGROUP BLOCK")
    grace_ms: int = Field(
        5_000,
        ge=0,
        le=120_000,
        description="how long after a minute's end a missing bar is waited for before the "
        "minute is announced with that symbol forward-filled",
    )
    clock: Literal["feed", "wall"] = Field(
        "feed",
        description="'feed': market time is the newest trade time in the feed (its:last:trade:*), "
        "so a replayed or accelerated simulator day works; 'wall': the machine's clock",
    )
    cache_ttl_s: int = Field(
        300,
        ge=1,
        description="TTL of its:features:latest:<SYMBOL>",
    )
    rebuild_on_start: bool = Field(
        True,
        description="rebuild the state from the current session's stored bars at start",
    )
