"""Settings of the dashboard: ``ITS_DASHBOARD_*`` plus the shared ones."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from its_common.settings import BaseServiceSettings


class DashboardSettings(BaseServiceSettings):
    """``ITS_DASHBOARD_*``. The UI is served on ``ITS_HTTP_PORT`` with the health endpoints."""

    SERVICE: ClassVar[str] = "dashboard"
    model_config = SettingsConfigDict(env_prefix="ITS_DASHBOARD_")

    token: SecretStr | None = Field(
        None,
        description="bearer token of the kill switch and resume (unset = buttons disabled)",
    )
    refresh_s: float = Field(2.0, gt=0, le=60)
    candle_minutes: int = Field(390, ge=10, le=5000)
    table_rows: int = Field(20, ge=1, le=500)
    router_metrics_url: str = Field(
        "",
        pattern=r"^(https?://.*)?$",
        description="router /metrics to scrape for throughput and latency (else sys_metrics)",
    )
    scrape_timeout_s: float = Field(2.0, gt=0)
    latency_window_s: float = Field(60.0, gt=0)
    loader_group: str = Field("loader", min_length=1)
    loader_streams: Annotated[list[str], NoDecode] = Field(
        default=["its:stream:bars:1m", "its:stream:trades"],
    )
    trader_service: str = Field("trader")
    kill_key: str = Field("its:trader:kill")
    accept_hit_ratio: float = Field(0.95, ge=0, le=1)
    accept_latency_p95_ms: float = Field(150.0, gt=0)
    accept_price_diff_pct: float = Field(0.1, gt=0)
    cluster_selector: str = Field(
        "app.kubernetes.io/part-of=its",
        min_length=1,
        description="label selector of the pods in the Cluster panel (the chart: its release)",
    )

    @field_validator("loader_streams", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
