"""Settings of the simulator: environment variables ``ITS_IBSIM_*`` (and the CLI flags)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from its_common.risk import PAPER_INITIAL_CASH
from its_common.settings import BaseServiceSettings
from its_ibsim.prices import parse_prices
from its_ibsim.server import SimOptions


class IbSimSettings(BaseServiceSettings):
    """``ITS_IBSIM_*`` (and ``REDIS_URL`` when the feed is ``redis``)."""

    SERVICE: ClassVar[str] = "ibsim"
    model_config = SettingsConfigDict(env_prefix="ITS_IBSIM_")

    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(4002, ge=0, le=65535, description="API port")
    account: str = Field(
        "DU1234567",
        min_length=1,
        description="the managed account (paper ids start with DU)",
    )
    server_version: int = Field(176, ge=157, le=178)
    feed: Literal["redis", "static"] = Field(
        "redis",
        description="prices from ITS's latest trades in Redis, or only the static prices",
    )
    static_price: float = Field(
        0.0,
        ge=0,
        description="price of any symbol without one (0 = none: orders are rejected)",
    )
    static_prices: str = Field("", description="SYM=PRICE,... (also a fallback)")
    initial_cash: float = Field(
        PAPER_INITIAL_CASH,
        gt=0,
        description="starting cash: the same paper figure as the SimBroker's (its_common.risk)",
    )
    commission_per_share: float = Field(0.005, ge=0)
    commission_min: float = Field(1.0, ge=0)
    spread_bps: float = Field(2.0, ge=0)
    tick_interval_s: float = Field(0.25, gt=0)
    fill_delay_s: float = Field(0.0, ge=0)
    quote_size: float = Field(
        100.0,
        gt=0,
        description="shares shown at the bid and at the ask per print, at least (limit orders)",
    )
    ignore_order_symbols: str = Field(
        "",
        description="comma-separated symbols whose orders are never acknowledged (fault)",
    )
    admin_enabled: bool = Field(True)

    @field_validator("static_prices")
    @classmethod
    def _check_prices(cls, value: str) -> str:
        parse_prices(value)
        return value

    def options(self) -> SimOptions:
        return SimOptions(
            host=self.host,
            port=self.port,
            account=self.account,
            server_version=self.server_version,
            initial_cash=self.initial_cash,
            commission_per_share=self.commission_per_share,
            commission_min=self.commission_min,
            spread_bps=self.spread_bps,
            tick_interval_s=self.tick_interval_s,
            fill_delay_s=self.fill_delay_s,
            quote_size=self.quote_size,
            ignore_order_symbols=frozenset(
                s.strip().upper() for s in self.ignore_order_symbols.split(",") if s.strip()
            ),
        )
