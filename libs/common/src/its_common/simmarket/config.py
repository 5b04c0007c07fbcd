"""The simulator's plain, validated configuration (:class:`SimConfig`) and the market's
defaults per symbol. The market simulator builds it from its settings (``its_marketsim.config``);
tests and the trainer build it directly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

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
    rest_sessions_per_request: int = 5
    admin_token: str | None = None
    admin_enabled: bool = True
    faults: dict[str, Any] = field(default_factory=dict)
    public_base_url: str | None = None
    # Whole-market mode (:mod:`its_common.simmarket.wholemarket`): this many more tickers
    # beside ``symbols``, from a light model, at these rates (trades/s over the regular session)
    whole_market_symbols: int = 0
    whole_market_rate: float = 2_000.0
    whole_market_zipf: float = 0.9
    whole_market_burst_rate: float = 0.0
    whole_market_burst_every_s: float = 600.0
    whole_market_burst_s: float = 5.0
    demo_pattern: bool = False  # the planted, learnable pattern of :mod:`.pattern` (demo only)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("at least one symbol")
        if not -0.99 <= self.correlation <= 0.99:
            raise ValueError("correlation must be within [-0.99, 0.99]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.rest_max_days < 1 or self.rest_sessions_per_request < 1:
            raise ValueError("rest_max_days and rest_sessions_per_request must be at least 1")
        if self.max_connections_close_code not in (1000, 1008):
            raise ValueError("max_connections_close_code must be 1000 or 1008")
        if self.max_connections_drop not in ("oldest", "newest"):
            raise ValueError("max_connections_drop must be 'oldest' or 'newest'")
        if not self.api_keys:
            raise ValueError("at least one API key")
        if self.whole_market_symbols < 0 or self.whole_market_rate < 0:
            raise ValueError("whole_market_symbols and whole_market_rate must not be negative")
        if self.whole_market_burst_rate < 0 or self.whole_market_zipf <= 0:
            raise ValueError("whole_market_burst_rate >= 0 and whole_market_zipf > 0")

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
