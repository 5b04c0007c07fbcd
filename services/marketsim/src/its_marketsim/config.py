"""Settings of the simulator: environment variables ``ITS_MARKETSIM_*`` (and the CLI flags).

:class:`SimConfig` is the plain, validated configuration the core modules take (tests build it
directly); :class:`MarketSimSettings` reads it from the environment through the shared
``its_common.settings`` base and converts it with :meth:`MarketSimSettings.to_config`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from its_common.settings import BaseServiceSettings

DEFAULT_START_PRICES: dict[str, float] = {"NVDA": 180.0, "MSFT": 500.0}
DEFAULT_TRADES_PER_DAY: dict[str, int] = {"NVDA": 1_400_000, "MSFT": 500_000}
DEFAULT_VOLATILITY: dict[str, float] = {"NVDA": 0.45, "MSFT": 0.25}
# Tape by primary listing: 1 = NYSE (tape A), 2 = NYSE Arca/American and others (tape B),
# 3 = Nasdaq (tape C). Symbols not listed here default to tape 1 unless configured.
NASDAQ_LISTED = frozenset(
    [
        "NVDA",
        "MSFT",
        "AAPL",
        "AMZN",
        "GOOGL",
        "GOOG",
        "META",
        "TSLA",
        "AMD",
        "INTC",
        "AVGO",
        "NFLX",
        "ADBE",
        "CSCO",
        "COST",
        "PEP",
        "QCOM",
        "TXN",
        "AMAT",
        "MU",
        "INTU",
        "PYPL",
        "SBUX",
        "QQQ",
    ]
)
TAPE_B = frozenset(["SPY", "IWM", "DIA", "GLD", "XLF", "XLE", "XLK"])
DEV_API_KEY = "its-dev-key"

DropPolicy = Literal["oldest", "newest"]


def default_tape(symbol: str) -> int:
    if symbol in NASDAQ_LISTED:
        return 3
    if symbol in TAPE_B:
        return 2
    return 1


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


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator core needs (see the README for each field's meaning)."""

    host: str = "127.0.0.1"
    port: int = 8765
    rest_port: int = 8766
    api_keys: tuple[str, ...] = (DEV_API_KEY,)
    symbols: tuple[str, ...] = ("NVDA", "MSFT")
    seed: int = 42
    speed: float = 1.0
    start: str = "auto"
    extended_hours: bool = False
    skip_closed: bool = True
    start_prices: dict[str, float] = field(default_factory=dict)
    volatility: dict[str, float] = field(default_factory=dict)
    trades_per_day: dict[str, float] = field(default_factory=dict)
    tapes: dict[str, float] = field(default_factory=dict)
    correlation: float = 0.6
    quotes_per_trade: float = 1.0
    extended_activity: float = 0.05
    late_bar_rate: float = 0.03
    batch_size: int = 500
    send_buffer_bytes: int = 8 * 1024 * 1024
    slow_reader_timeout_s: float = 10.0
    auth_timeout_s: float = 10.0
    auth_close_code: int = 1000
    max_connections_per_key: int = 1
    max_connections_drop: DropPolicy = "newest"
    max_connections_close_code: int = 1008
    replay_file: str | None = None
    rest_rate_limit: int = 0
    rest_max_days: int = 370
    admin_token: str | None = None
    admin_enabled: bool = True
    faults: dict[str, Any] = field(default_factory=dict)
    public_base_url: str | None = None

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("at least one symbol")
        if not -0.99 <= self.correlation <= 0.99:
            raise ValueError("correlation must be within [-0.99, 0.99]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_connections_close_code not in (1000, 1008):
            raise ValueError("max_connections_close_code must be 1000 or 1008")
        if self.max_connections_drop not in ("oldest", "newest"):
            raise ValueError("max_connections_drop must be 'oldest' or 'newest'")
        if not self.api_keys:
            raise ValueError("at least one API key")

    @property
    def as_fast_as_possible(self) -> bool:
        return math.isinf(self.speed)

    def start_price(self, symbol: str) -> float:
        return float(self.start_prices.get(symbol, DEFAULT_START_PRICES.get(symbol, 100.0)))

    def annual_volatility(self, symbol: str) -> float:
        return float(self.volatility.get(symbol, DEFAULT_VOLATILITY.get(symbol, 0.30)))

    def daily_trades(self, symbol: str) -> float:
        return float(self.trades_per_day.get(symbol, DEFAULT_TRADES_PER_DAY.get(symbol, 200_000)))

    def tape(self, symbol: str) -> int:
        return int(self.tapes.get(symbol, default_tape(symbol)))


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
    rest_max_days: int = Field(370, ge=1)
    admin_enabled: bool = Field(True)
    admin_token: SecretStr | None = Field(None)
    faults: str = Field(
        "",
        description='initial faults as JSON, e.g. {"duplicate_rate": 0.01}',
    )
    public_base_url: str | None = Field(None)

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
            admin_token=token,
            admin_enabled=self.admin_enabled,
            faults=json.loads(self.faults) if self.faults.strip() else {},
            public_base_url=self.public_base_url,
        )
