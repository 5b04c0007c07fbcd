"""Router settings (environment variables; see services/router/README.md)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from its_common.settings import BaseServiceSettings

CHANNELS = ("T", "Q", "A", "AM")


class RouterSettings(BaseServiceSettings):
    """The router's own settings keep their documented ``ITS_<FIELD>`` names (the common prefix,
    which other services' variables share, so it is not checked for typos). ``ITS_ROUTER_*`` is
    claimed: ``ITS_ROUTER_WORKERS`` is its one setting there, any other such variable is a
    mistake and is named."""

    SERVICE: ClassVar[str] = "router"
    EXTRA_ENV_PREFIXES: ClassVar[tuple[str, ...]] = ("ITS_ROUTER_",)

    polygon_ws_url: str = Field(
        default="wss://socket.polygon.io/stocks",
        pattern=r"^wss?://",
        description="feed WebSocket URL (Polygon, delayed cluster or the ITS simulator)",
    )
    polygon_rest_url: str = Field(
        default="https://api.polygon.io", pattern=r"^https?://", description="REST base URL"
    )
    use_polygon_ws: bool = Field(
        default=True,
        validation_alias=AliasChoices("USE_POLYGON_WS", "ITS_USE_POLYGON_WS"),
        description="false = the REST polling fallback (the rollback switch)",
    )
    channels: Annotated[list[str], NoDecode] = Field(
        default=["T", "AM"], min_length=1, description="channels to subscribe: T, AM, Q, A"
    )
    subscribe_all: bool = Field(
        default=False,
        description="whole-market mode: subscribe every ticker (T.*, AM.*) instead of the "
        "symbol list, which still names the symbols whose gaps are backfilled",
    )
    queue_max_frames: int = Field(default=2_000, ge=10, description="read queue bound (frames)")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("ITS_ROUTER_WORKERS"),
        description="write worker processes behind the one feed connection (1: in-process)",
    )
    batch_max_events: int = Field(default=20_000, ge=1, description="events per write batch")
    hold_max_events: int = Field(
        default=1_000_000, ge=1, description="events held in memory while Redis is unreachable"
    )
    stale_after_s: float = Field(
        default=30.0, gt=0, description="watchdog: silence before reconnect"
    )
    watchdog_always: bool = Field(
        default=False, description="watch for staleness outside market hours too"
    )
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    auth_timeout_s: float = Field(default=10.0, gt=0)
    auth_failed_retry_s: float = Field(
        default=300.0, gt=0, description="wait after auth_failed before one more attempt"
    )
    max_connections_backoff_s: float = Field(default=60.0, gt=0)
    symbols_key: str = Field(
        default="its:config:symbols", description="Redis key holding the live symbol list"
    )
    symbols_poll_s: float = Field(default=2.0, gt=0)
    rest_poll_interval_s: float = Field(default=15.0, gt=0)
    rest_requests_per_minute: int = Field(default=300, ge=1)
    trim_interval_s: float = Field(
        default=1.0, gt=0, description="period of the lag-aware stream trimmer (every stream)"
    )
    trim_high_water_mib: int = Field(
        default=160,
        ge=1,
        description="Redis used_memory (MiB) above which entries are trimmed even unread",
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _split_channels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(CHANNELS))
        if unknown:
            raise ValueError(f"channels among {', '.join(CHANNELS)}; not {', '.join(unknown)}")
        return list(dict.fromkeys(value))
