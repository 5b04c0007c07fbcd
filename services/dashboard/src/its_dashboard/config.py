"""Settings of the dashboard: ``ITS_DASHBOARD_*`` plus the shared ones."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from its_common.settings import BaseServiceSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"ITS_DASHBOARD_{name.upper()}")


class DashboardSettings(BaseServiceSettings):
    """``ITS_DASHBOARD_*``. The UI is served on ``ITS_HTTP_PORT`` with the health endpoints."""

    SERVICE: ClassVar[str] = "dashboard"

    token: SecretStr | None = Field(
        None,
        validation_alias=_env("token"),
        description="bearer token of the kill switch and resume (unset = buttons disabled)",
    )
    refresh_s: float = Field(2.0, gt=0, le=60, validation_alias=_env("refresh_s"))
    candle_minutes: int = Field(390, ge=10, le=5000, validation_alias=_env("candle_minutes"))
    table_rows: int = Field(20, ge=1, le=500, validation_alias=_env("table_rows"))
    router_metrics_url: str = Field(
        "",
        validation_alias=_env("router_metrics_url"),
        pattern=r"^(https?://.*)?$",
        description="router /metrics to scrape for throughput and latency (else sys_metrics)",
    )
    scrape_timeout_s: float = Field(2.0, gt=0, validation_alias=_env("scrape_timeout_s"))
    latency_window_s: float = Field(60.0, gt=0, validation_alias=_env("latency_window_s"))
    loader_group: str = Field("loader", min_length=1, validation_alias=_env("loader_group"))
    loader_streams: Annotated[list[str], NoDecode] = Field(
        default=["its:stream:bars:1m", "its:stream:trades"],
        validation_alias=_env("loader_streams"),
    )
    trader_service: str = Field("trader", validation_alias=_env("trader_service"))
    kill_key: str = Field("its:trader:kill", validation_alias=_env("kill_key"))
    accept_hit_ratio: float = Field(0.95, ge=0, le=1, validation_alias=_env("accept_hit_ratio"))
    accept_latency_p95_ms: float = Field(
        150.0, gt=0, validation_alias=_env("accept_latency_p95_ms")
    )
    accept_price_diff_pct: float = Field(0.1, gt=0, validation_alias=_env("accept_price_diff_pct"))

    @field_validator("loader_streams", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
