"""Settings of the simulator: environment variables ``ITS_MARKETSIM_*`` (and the CLI flags).

:class:`its_common.simmarket.config.SimConfig` is the plain, validated configuration the core
modules take (tests build it directly); :class:`MarketSimSettings` reads it from the environment
through the shared ``its_common.settings`` base and converts it with
:meth:`MarketSimSettings.to_config`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from its_common.settings import BaseServiceSettings
from its_common.simmarket.config import DEV_API_KEY, SimConfig


def parse_mapping(value: str | dict[str, Any] | None) -> dict[str, float]:
    """``"NVDA=180,MSFT=500"`` (or a dict) to ``{"NVDA": 180.0, "MSFT": 500.0}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k).upper(): float(v) for k, v in value.items()}
    result: dict[str, float] = {}
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"expected SYMBOL=NUMBER pairs separated by commas, got {part!r}")
        key, number = part.split("=", 1)
        result[key.strip().upper()] = float(number)
    return result


def parse_speed(value: str | float) -> float:
    """``"max"`` (or 0): as fast as possible (``math.inf``); else a positive factor."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"max", "fast", "inf", "0"}:
            return math.inf
        value = float(text.removesuffix("x"))
    if value == 0 or math.isinf(value):
        return math.inf
    if not value > 0:
        raise ValueError("speed must be a positive factor or 'max'")
    return float(value)


class MarketSimSettings(BaseServiceSettings):
    """``ITS_MARKETSIM_*`` environment variables (plus the shared ``ITS_*`` ones)."""

    SERVICE: ClassVar[str] = "marketsim"
    model_config = SettingsConfigDict(env_prefix="ITS_MARKETSIM_")

    host: str = Field("127.0.0.1")
    port: int = Field(8765, ge=0, le=65535)
    rest_port: int = Field(8766, ge=0, le=65535)
    api_keys: SecretStr = Field(
        SecretStr(DEV_API_KEY),
        description="comma-separated valid API keys",
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default=["NVDA", "MSFT"],
        min_length=1,
        validation_alias=AliasChoices("ITS_MARKETSIM_SYMBOLS", "ITS_SYMBOLS"),
    )
    seed: int = Field(42)
    speed: str = Field(
        "1",
        description="clock factor (1 real time, 60 = a day in 6.5 min) or 'max'",
    )
    start: str = Field(
        "auto",
        description="auto, now, YYYY-MM-DD or an ISO date-time (naive = New York time)",
    )
    extended_hours: bool = Field(False)
    skip_closed: bool = Field(True)
    start_prices: str = Field("")
    volatility: str = Field("")
    trades_per_day: str = Field("")
    tapes: str = Field("")
    correlation: float = Field(0.6, ge=-0.99, le=0.99)
    quotes_per_trade: float = Field(1.0, ge=0)
    extended_activity: float = Field(0.05, ge=0, le=1)
    late_bar_rate: float = Field(0.03, ge=0, le=1)
    batch_size: int = Field(500, ge=1)
    send_buffer_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    slow_reader_timeout_s: float = Field(10.0, gt=0)
    auth_timeout_s: float = Field(10.0, gt=0)
    auth_close_code: int = Field(1000)
    max_connections_per_key: int = Field(1, ge=1)
    max_connections_drop: Literal["oldest", "newest"] = Field("newest")
    max_connections_close_code: Literal[1000, 1008] = Field(1008)
    replay_file: str | None = Field(None)
    rest_rate_limit: int = Field(0, ge=0)
    rest_max_days: int = Field(370, ge=1, le=5000)
    rest_sessions_per_request: int = Field(5, ge=1, le=370)
    admin_enabled: bool = Field(True)
    admin_token: SecretStr | None = Field(None)
    faults: str = Field(
        "",
        description='initial faults as JSON, e.g. {"duplicate_rate": 0.01}',
    )
    public_base_url: str | None = Field(None)
    whole_market_symbols: int = Field(
        0, ge=0, le=20_000, description="whole-market mode: this many more tickers (0 = off)"
    )
    whole_market_rate: float = Field(
        2_000.0, ge=0, le=2_000_000, description="their average trades/s (regular session)"
    )
    whole_market_zipf: float = Field(0.9, gt=0, le=5, description="Zipf exponent of activity")
    whole_market_burst_rate: float = Field(0.0, ge=0, le=2_000_000)
    whole_market_burst_every_s: float = Field(600.0, gt=0)
    whole_market_burst_s: float = Field(5.0, ge=0)
    demo_pattern: bool = Field(
        False,
        description="the demo market's planted, learnable pattern (its_common.simmarket.pattern); "
        "only for the demo (make run)",
    )
    position_path: str | None = Field(
        None,
        description="file keeping a replay's position so the next start continues it "
        "(start=auto on a closed market; `make run` sets var/marketsim/position.json)",
    )

    @field_validator("speed")
    @classmethod
    def _check_speed(cls, value: str) -> str:
        parse_speed(value)
        return value

    @field_validator("start_prices", "volatility", "trades_per_day", "tapes")
    @classmethod
    def _check_mapping(cls, value: str) -> str:
        parse_mapping(value)
        return value

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, value: str) -> str:
        if value.strip():
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError("a JSON object")
            from its_marketsim.faults import FaultState

            FaultState().update(parsed)
        return value

    @field_validator("replay_file")
    @classmethod
    def _check_replay(cls, value: str | None) -> str | None:
        if value and not Path(value).is_file():
            raise ValueError("a readable CSV or Parquet file")
        return value or None

    def to_config(self) -> SimConfig:
        keys = tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())
        token = self.admin_token.get_secret_value() if self.admin_token else None
        return SimConfig(
            host=self.host,
            port=self.port,
            rest_port=self.rest_port,
            api_keys=keys,
            symbols=tuple(self.symbols),
            seed=self.seed,
            speed=parse_speed(self.speed),
            start=self.start,
            extended_hours=self.extended_hours,
            skip_closed=self.skip_closed,
            start_prices=parse_mapping(self.start_prices),
            volatility=parse_mapping(self.volatility),
            trades_per_day=parse_mapping(self.trades_per_day),
            tapes=parse_mapping(self.tapes),
            correlation=self.correlation,
            quotes_per_trade=self.quotes_per_trade,
            extended_activity=self.extended_activity,
            late_bar_rate=self.late_bar_rate,
            batch_size=self.batch_size,
            send_buffer_bytes=self.send_buffer_bytes,
            slow_reader_timeout_s=self.slow_reader_timeout_s,
            auth_timeout_s=self.auth_timeout_s,
            auth_close_code=self.auth_close_code,
            max_connections_per_key=self.max_connections_per_key,
            max_connections_drop=self.max_connections_drop,
            max_connections_close_code=self.max_connections_close_code,
            replay_file=self.replay_file,
            rest_rate_limit=self.rest_rate_limit,
            rest_max_days=self.rest_max_days,
            rest_sessions_per_request=self.rest_sessions_per_request,
            admin_token=token,
            admin_enabled=self.admin_enabled,
            faults=json.loads(self.faults) if self.faults.strip() else {},
            public_base_url=self.public_base_url,
            whole_market_symbols=self.whole_market_symbols,
            whole_market_rate=self.whole_market_rate,
            whole_market_zipf=self.whole_market_zipf,
            whole_market_burst_rate=self.whole_market_burst_rate,
            whole_market_burst_every_s=self.whole_market_burst_every_s,
            whole_market_burst_s=self.whole_market_burst_s,
            demo_pattern=self.demo_pattern,
        )
