"""``its-marketsim facts``: the stylized facts of the synthetic market against real ranges.

Generates N sessions with the real generator (:mod:`its_common.simmarket.market`) and measures,
over the regular sessions, what a real large-cap US stock shows: fat tails and volatility
clustering of 1-minute returns, days of different volatility, correlated symbols, a U-shaped
day with the close busiest, auction prints, trades inside the quote, trade sizes, and sequence
numbers that increase with time across trades and quotes. Each fact prints with its real range;
the exit code is 1 when any fact falls outside. Sources of the ranges: see the README.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from its_common import conditions
from its_common.simmarket import sessions
from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import DayData, TradeColumns
from its_common.simmarket.market import MarketGenerator

F64 = NDArray[np.float64]
MINUTE_MS = 60_000
SEQ_SPAN = 1 << 26  # sequence numbers of one symbol and day stay below this
DEFAULT_FIRST_DAY = date(2025, 3, 3)


@dataclass(frozen=True)
class Fact:
    name: str
    value: float
    low: float
    high: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.value)) and self.low <= self.value <= self.high


@dataclass
class _Symbol:
    """What one symbol contributes, accumulated over the sessions."""

    returns: list[F64]
    day_vol: list[float]
    minute_volume: list[F64]
    close_share: list[float]
    auctions: int = 0
    inside: int = 0
    quoted: int = 0
    odd: int = 0
    trades: int = 0
    sizes: list[NDArray[np.int64]] | None = None
    backward: int = 0
    steps: int = 0
    price: float = 0.0


def _acf(x: F64, lag: int) -> float:
    x = x - x.mean()
    denom = float(np.dot(x, x))
    return float(np.dot(x[:-lag], x[lag:]) / denom) if denom > 0 else float("nan")


def _pooled_acf(series: list[F64], lag: int) -> float:
    """Autocorrelation over several days: demeaned on the pool, lags never cross a day."""
    pool = np.concatenate(series)
    mean = pool.mean()
    num = sum(float(np.dot(s[:-lag] - mean, s[lag:] - mean)) for s in series if len(s) > lag)
    den = float(np.dot(pool - mean, pool - mean))
    return num / den if den > 0 else float("nan")


def _hill_alpha(sizes: NDArray[np.int64], top: float = 0.01) -> float:
    """Hill estimator of the tail exponent over the largest ``top`` share of sizes."""
    ordered = np.sort(sizes.astype(np.float64))[::-1]
    k = max(int(len(ordered) * top), 10)
    if len(ordered) <= k:
        return float("nan")
    logs = np.log(ordered[:k]) - np.log(ordered[k])
    return float(1.0 / logs.mean()) if logs.mean() > 0 else float("nan")


def _session_minutes(data: DayData, session: sessions.TradingDay) -> int:
    return int((session.close_ms - session.open_ms) // MINUTE_MS)


def _measure_day(data: DayData, session: sessions.TradingDay, k: int, acc: _Symbol) -> F64 | None:
    """Accumulate one symbol's day; returns its 1-minute close series (NaN where no bar)."""
    trades = data.symbol_trades(data.symbols[k])
    if trades is None or len(trades) == 0:
        return None
    t_ms = trades.t_ns // 1_000_000
    regular = (t_ms >= session.open_ms) & (t_ms < session.close_ms)
    reg = trades.take(np.flatnonzero(regular))
    minutes = _session_minutes(data, session)
    bars = data.bars(reg, MINUTE_MS)
    index = (bars.start - session.open_ms) // MINUTE_MS
    closes = np.full(minutes, np.nan)
    closes[index] = bars.close
    volume = np.zeros(minutes)
    volume[index] = bars.volume
    acc.minute_volume.append(volume)
    filled = _forward_fill(closes)
    r = np.diff(np.log(filled))
    r = r[np.isfinite(r)]
    acc.returns.append(r)
    acc.day_vol.append(float(np.sqrt(np.sum(r * r))))
    codes = [data.cond_table[c] for c in reg.cond.tolist()]
    auction_close = np.array([19 in c or 8 in c for c in codes], dtype=bool)
    auction_open = np.array([17 in c or 25 in c for c in codes], dtype=bool)
    updates = data.updates[reg.cond]
    counted = (updates & conditions.VOLUME) != 0
    day_volume = float(reg.size[counted].sum())
    acc.close_share.append(float(reg.size[auction_close].sum()) / day_volume if day_volume else 0)
    acc.auctions += int(auction_open.any()) + int(auction_close.any())
    late = np.array([32 in c for c in codes], dtype=bool)
    acc.odd += int((reg.size < 100).sum())
    acc.trades += len(reg)
    assert acc.sizes is not None
    acc.sizes.append(reg.size.astype(np.int64))
    acc.price = float(np.median(reg.price))
    _quote_facts(data, k, reg, late | auction_open | auction_close, acc)
    return closes


def _quote_facts(
    data: DayData, k: int, reg: TradeColumns, skip: NDArray[np.bool_], acc: _Symbol
) -> None:
    """Trades inside the prevailing quote; sequence numbers against time across T and Q."""
    if data.quote_factory is None:
        return
    quotes = data.quotes()
    mine = np.flatnonzero(quotes.sym == k)
    q_seq, q_t = quotes.seq[mine], quotes.t_ms[mine]
    bid, ask = quotes.bid[mine], quotes.ask[mine]
    keep = ~skip
    t_seq, t_t, price = reg.seq[keep], reg.t_ns[keep] // 1_000_000, reg.price[keep]
    # The prevailing quote of a trade: the last quote before it in time (same millisecond:
    # in sequence order).
    if len(q_t) == 0 or len(t_t) == 0:
        return
    t0 = min(int(q_t.min()), int(t_t.min()))
    q_key = (q_t - t0) * SEQ_SPAN + q_seq % SEQ_SPAN
    t_key = (t_t - t0) * SEQ_SPAN + t_seq % SEQ_SPAN
    order = np.argsort(q_key, kind="stable")
    q_key, bid, ask = q_key[order], bid[order], ask[order]
    prev = np.searchsorted(q_key, t_key) - 1
    has = prev >= 0
    p = price[has]
    i = prev[has]
    acc.inside += int(((p >= bid[i] - 1e-9) & (p <= ask[i] + 1e-9)).sum())
    acc.quoted += int(has.sum())
    # Merged by sequence number, time must never go backwards.
    seq = np.concatenate((t_seq, quotes.seq[mine]))
    t = np.concatenate((t_t, quotes.t_ms[mine]))
    t = t[np.argsort(seq, kind="stable")]
    acc.backward += int((np.diff(t) < 0).sum())
    acc.steps += max(len(t) - 1, 0)


def _forward_fill(x: F64) -> F64:
    valid = np.isfinite(x)
    index = np.where(valid, np.arange(len(x)), 0)
    np.maximum.accumulate(index, out=index)
    out = x[index]
    out[~valid & (np.cumsum(valid) == 0)] = np.nan
    return out


def measure(config: SimConfig, n_sessions: int, first: date = DEFAULT_FIRST_DAY) -> list[Fact]:
    """The stylized facts of ``n_sessions`` regular sessions from ``first`` on."""
    days = sessions.sessions_between(first, date(first.year + 2, 12, 31))[:n_sessions]
    if not days:
        raise ValueError(f"no sessions from {first}")
    generator = MarketGenerator(config, days[0].day, cache_days=1)
    accs = [_Symbol([], [], [], [], sizes=[]) for _ in config.symbols]
    closes: list[list[F64]] = [[] for _ in config.symbols]
    for session in days:
        data = generator.day(session.day)
        if data is None:
            continue
        for k in range(len(config.symbols)):
            series = _measure_day(data, session, k, accs[k])
            if series is not None:
                closes[k].append(series)
    return _facts(config, accs, closes)


def _facts(config: SimConfig, accs: list[_Symbol], closes: list[list[F64]]) -> list[Fact]:
    facts: list[Fact] = []
    for symbol, acc in zip(config.symbols, accs, strict=True):
        r = np.concatenate(acc.returns)
        z = r / r.std()
        facts.append(
            Fact(f"{symbol} excess kurtosis of 1-min returns", float(np.mean(z**4) - 3), 3.0, 60.0)
        )
        facts.append(
            Fact(f"{symbol} ACF of 1-min returns, lag 1", _pooled_acf(acc.returns, 1), -0.1, 0.1)
        )
        abs_r = [np.abs(x) for x in acc.returns]
        lag1 = _pooled_acf(abs_r, 1)
        facts.append(Fact(f"{symbol} ACF of |r|, lag 1", lag1, 0.1, 0.4))
        facts.append(
            Fact(f"{symbol} ACF of |r|, lag 30 / lag 1", _pooled_acf(abs_r, 30) / lag1, 0.2, 1.0)
        )
        vol = np.array(acc.day_vol)
        facts.append(
            Fact(
                f"{symbol} daily realized vol, coefficient of variation",
                float(vol.std() / vol.mean()),
                0.15,
                1.0,
            )
        )
        volume = np.mean(
            np.vstack([v[: min(len(x) for x in acc.minute_volume)] for v in acc.minute_volume]),
            axis=0,
        )
        n = len(volume)
        midday = volume[n // 2 - 60 : n // 2 + 60].mean()
        open_ratio = float(volume[:30].mean() / midday)
        close_ratio = float(volume[-30:].mean() / midday)
        facts.append(Fact(f"{symbol} volume first 30 min / midday", open_ratio, 1.5, 6.0))
        facts.append(
            Fact(
                f"{symbol} volume last 30 min / midday (incl. closing cross)",
                close_ratio,
                2.0,
                12.0,
            )
        )
        facts.append(
            Fact(f"{symbol} last 30 min / first 30 min volume", close_ratio / open_ratio, 1.0, 5.0)
        )
        facts.append(
            Fact(
                f"{symbol} closing cross share of day volume",
                float(np.mean(acc.close_share)),
                0.03,
                0.15,
            )
        )
        facts.append(
            Fact(
                f"{symbol} auction prints per session (open + close)",
                acc.auctions / len(acc.returns),
                2.0,
                2.0,
            )
        )
        sizes = np.concatenate(acc.sizes or [])
        facts.append(
            Fact(f"{symbol} odd-lot share of trades", acc.odd / max(acc.trades, 1), 0.3, 0.8)
        )
        facts.append(Fact(f"{symbol} distinct trade sizes", float(len(np.unique(sizes))), 200, 1e9))
        facts.append(
            Fact(f"{symbol} trade size tail exponent (Hill, top 1 %)", _hill_alpha(sizes), 1.0, 2.5)
        )
        if acc.quoted:
            facts.append(
                Fact(
                    f"{symbol} trades inside the prevailing quote",
                    acc.inside / acc.quoted,
                    0.97,
                    0.995,
                )
            )
            facts.append(
                Fact(
                    f"{symbol} T+Q merged by sequence: time steps backwards",
                    acc.backward / max(acc.steps, 1),
                    0.0,
                    0.0,
                )
            )
    if len(accs) >= 2:
        a, b = accs[0], accs[1]
        pairs = [(x, y) for x, y in zip(closes[0], closes[1], strict=True)]
        ra, rb = [], []
        for x, y in pairs:
            dx, dy = np.diff(np.log(_forward_fill(x))), np.diff(np.log(_forward_fill(y)))
            ok = np.isfinite(dx) & np.isfinite(dy)
            ra.append(dx[ok])
            rb.append(dy[ok])
        corr = float(np.corrcoef(np.concatenate(ra), np.concatenate(rb))[0, 1])
        names = f"{config.symbols[0]}/{config.symbols[1]}"
        facts.append(Fact(f"{names} correlation of 1-min returns", corr, 0.2, 0.8))
        mean_a = float(np.mean(np.concatenate(a.sizes or [])))
        mean_b = float(np.mean(np.concatenate(b.sizes or [])))
        cheap, dear = (mean_a, mean_b) if a.price < b.price else (mean_b, mean_a)
        facts.append(Fact("mean trade size, cheaper / dearer symbol", cheap / dear, 1.1, 10.0))
    return facts


def render(facts: Sequence[Fact]) -> str:
    width = max(len(f.name) for f in facts)
    lines = [f"{'fact':<{width}}  {'measured':>10}  {'real range':>17}  ok"]
    for f in facts:
        real = f"{f.low:g} .. {f.high:g}" if f.high < 1e8 else f">= {f.low:g}"
        lines.append(f"{f.name:<{width}}  {f.value:>10.4g}  {real:>17}  {'yes' if f.ok else 'NO'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-marketsim facts",
        description="Stylized facts of the synthetic market over N sessions against real ranges "
        "(exit code 1 when any is outside).",
    )
    parser.add_argument("--sessions", type=int, default=20, help="sessions to generate (20)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    parser.add_argument("--symbols", default="NVDA,MSFT", help="comma-separated tickers")
    parser.add_argument("--first-day", default=DEFAULT_FIRST_DAY.isoformat(), help="YYYY-MM-DD")
    parser.add_argument("--trades-per-day", type=int, default=None, help="override per symbol")
    parser.add_argument("--correlation", type=float, default=0.6, help="of returns (0.6)")
    args = parser.parse_args(argv)
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    per_day = {s: float(args.trades_per_day) for s in symbols} if args.trades_per_day else {}
    config = SimConfig(
        symbols=symbols, seed=args.seed, trades_per_day=per_day, correlation=args.correlation
    )
    facts = measure(config, args.sessions, date.fromisoformat(args.first_day))
    print(render(facts))
    return 0 if all(f.ok for f in facts) else 1


if __name__ == "__main__":
    sys.exit(main())
