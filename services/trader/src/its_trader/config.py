"""Settings of the trader: environment variables ``ITS_TRADER_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from its_common.risk import PAPER_INITIAL_CASH, RiskLimits
from its_common.settings import BaseServiceSettings
from its_trader.simbroker import SimConfig


class TraderSettings(BaseServiceSettings):
    """``ITS_TRADER_*`` (and ``REDIS_URL``, ``DATABASE_URL``, ``ITS_SYMBOLS``...)."""

    SERVICE: ClassVar[str] = "trader"
    model_config = SettingsConfigDict(env_prefix="ITS_TRADER_")
    # The IB adapter's settings keep their documented ITS_IB_* names; a typo there is caught too.
    EXTRA_ENV_PREFIXES: ClassVar[tuple[str, ...]] = ("ITS_IB_",)

    broker: Literal["sim", "ib"] = Field(
        "sim",
        description="broker adapter: sim (built-in paper broker) or ib (IB Gateway, paper)",
    )
    ib_host: str = Field("127.0.0.1", validation_alias=AliasChoices("ITS_IB_HOST"))
    ib_port: int = Field(
        4002, ge=1, le=65535, validation_alias=AliasChoices("ITS_IB_PORT"),
        description="IB Gateway API port (4002 paper; 4001/7496 refused unless live is allowed)",
    )  # fmt: skip
    ib_client_id: int = Field(1, ge=0, validation_alias=AliasChoices("ITS_IB_CLIENT_ID"))
    ib_account: str = Field(
        "", validation_alias=AliasChoices("ITS_IB_ACCOUNT"),
        description="account id (empty = the only managed account; must start with DU)",
    )  # fmt: skip
    ib_ack_timeout_s: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("ITS_IB_ACK_TIMEOUT_S"),
        description="an order without acknowledgement after this long is an incident",
    )  # fmt: skip
    ib_market_data_type: int = Field(
        1, ge=1, le=4, validation_alias=AliasChoices("ITS_IB_MARKET_DATA_TYPE")
    )
    allow_live_trading: bool = Field(
        False, validation_alias=AliasChoices("ITS_ALLOW_LIVE_TRADING"),
        description="true lets the IB adapter use live ports and non-DU accounts",
    )  # fmt: skip
    account: str = Field("SIM", min_length=1)
    group: str = Field("trader", min_length=1)
    consumer: str = Field("", description="consumer name; empty = host-pid")
    block_ms: int = Field(500, ge=1)
    clock: Literal["feed", "wall"] = Field(
        "feed",
        description="market time for hours/cooldowns: latest feed trade time, or the wall clock",
    )
    max_price_age_s: float = Field(
        30.0,
        ge=0,
        description="a feed price received longer ago than this is not fresh (0 = no limit)",
    )
    buy_fraction: float = Field(0.10, gt=0, le=1)
    order_type: Literal["market", "marketable_limit"] = Field(
        "market",
        description="market orders, or limit orders priced at most limit_slippage_bps worse "
        "than the feed price at the decision (flattening always uses market orders)",
    )
    limit_slippage_bps: float = Field(
        20.0, ge=0, le=1_000, description="marketable limit: the slippage cap in basis points"
    )
    limit_timeout_s: float = Field(
        30.0,
        gt=0,
        description="marketable limit: the unfilled remainder is cancelled after this long",
    )
    min_confidence: float = Field(0.6, ge=0, le=1)
    cooldown_s: float = Field(60.0, ge=0)
    max_position_usd: float = Field(50_000.0, gt=0)
    max_gross_exposure_usd: float = Field(100_000.0, gt=0)
    max_daily_loss_usd: float = Field(2_000.0, gt=0)
    max_drawdown_pct: float = Field(0.05, gt=0, le=1)
    max_orders_per_minute: int = Field(10, ge=1)
    regular_hours_only: bool = Field(True)
    flatten_before_close_min: float = Field(
        0.0,
        ge=0,
        description="flatten this many minutes before the close (0 = off)",
    )
    snapshot_interval_s: float = Field(10.0, gt=0)
    control_interval_s: float = Field(0.5, gt=0)
    stale_order_s: float = Field(
        120.0,
        gt=0,
        description="at recovery, a recorded order the broker never got is sent only if younger",
    )
    sim_initial_cash: float = Field(PAPER_INITIAL_CASH, gt=0)
    sim_slippage_bps: float = Field(1.0, ge=0)
    sim_commission_per_share: float = Field(0.005, ge=0)
    sim_commission_min: float = Field(1.0, ge=0)
    sim_mark_bias_bps: float = Field(
        0.0,
        description="fault injection: shift the SimBroker's published reference price",
    )

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(
            min_confidence=self.min_confidence,
            cooldown_s=self.cooldown_s,
            max_position_usd=self.max_position_usd,
            max_gross_exposure_usd=self.max_gross_exposure_usd,
            max_daily_loss_usd=self.max_daily_loss_usd,
            max_drawdown_pct=self.max_drawdown_pct,
            max_orders_per_minute=self.max_orders_per_minute,
            regular_hours_only=self.regular_hours_only,
            flatten_before_close_min=self.flatten_before_close_min,
        )

    def sim_config(self) -> SimConfig:
        return SimConfig(
            account=self.account,
            initial_cash=self.sim_initial_cash,
            slippage_bps=self.sim_slippage_bps,
            commission_per_share=self.sim_commission_per_share,
            commission_min=self.sim_commission_min,
            mark_bias_bps=self.sim_mark_bias_bps,
        )
