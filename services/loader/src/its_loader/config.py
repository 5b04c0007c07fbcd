"""Settings of the loader: environment variables ``ITS_LOADER_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from its_common.settings import BaseServiceSettings


class LoaderSettings(BaseServiceSettings):
    """``ITS_LOADER_*`` (and ``ITS_POLYGON_REST_URL``, ``POLYGON_API_KEY``, ``DATABASE_URL``...)."""

    SERVICE: ClassVar[str] = "loader"
    model_config = SettingsConfigDict(env_prefix="ITS_LOADER_")

    polygon_rest_url: str = Field(
        "https://api.polygon.io",
        validation_alias=AliasChoices("ITS_POLYGON_REST_URL"),
        pattern=r"^https?://",
        description="Polygon REST base URL (the simulator locally)",
    )
    group: str = Field("loader", min_length=1)
    consumer: str = Field(
        "",
        description="consumer name in the group; empty = pod name / host-pid",
    )
    streams: str = Field(
        "bars,trades,gaps",
        pattern=r"^(bars|trades|gaps)(,(bars|trades|gaps))*$",
        description="which streams this replica consumes",
    )
    batch_entries: int = Field(200, ge=1, le=10_000, description="XREADGROUP COUNT")
    block_ms: int = Field(1000, ge=1)
    claim_idle_ms: int = Field(
        30_000,
        ge=1,
        description="a pending entry idle this long belongs to a dead consumer and is claimed",
    )
    claim_interval_s: float = Field(5.0, gt=0)
    max_deliveries: int = Field(
        5,
        ge=1,
        description="deliveries after which a failing entry goes to the dead-letter stream",
    )
    db_retry_max_s: float = Field(10.0, gt=0, description="max DB retry backoff")
    metrics_interval_s: float = Field(5.0, gt=0)
    redis_memory_warn_bytes: int = Field(
        180 * 1024 * 1024,
        gt=0,
        description="warn (log + gauge) when Redis used_memory exceeds this",
    )
    backfill_on_start: bool = Field(True)
    backfill_initial_sessions: int = Field(
        1,
        ge=0,
        description="sessions to backfill at start when a symbol has no stored bar",
    )
    backfill_trades: bool = Field(
        True,
        description="gap windows backfill trades from /v3/trades too (not only minute bars)",
    )
    late_reports_s: float = Field(
        900.0,
        ge=0,
        description="gap windows are backfilled from this long before their start: trades "
        "reported late (and the corrected bars re-sent for them) during a gap are lost with it",
    )
    settle_wait_s: float = Field(
        150.0,
        ge=0,
        description="how long (wall clock) a gap window waits for its last minute to be final "
        "on the market clock before it is filled as far as it is final",
    )
    rest_page_limit: int = Field(50_000, ge=1, le=50_000)
    rest_max_retries: int = Field(8, ge=0)
    rest_backoff_s: float = Field(1.0, gt=0, description="first 429/5xx backoff")
    rest_backoff_max_s: float = Field(60.0, gt=0)
    rest_timeout_s: float = Field(30.0, gt=0)
    audit_price_tolerance: float = Field(
        1e-6,
        ge=0,
        description="relative OHLC difference the audit accepts",
    )
    audit_volume_tolerance: float = Field(1e-6, ge=0)

    def stream_kinds(self) -> list[str]:
        return [part for part in self.streams.split(",") if part]
