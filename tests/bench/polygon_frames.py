"""Frames that look like Polygon's: for the router bench and its profile.

Several symbols interleaved in one frame, mixed event types (trades mostly, quotes among them,
minute bars at each minute's end), condition lists on most trades, TRF fields on off-exchange
prints, normal JSON spacing (``json.dumps`` defaults: ``", "`` and ``": "``), frame sizes that
vary around a mean (Polygon packs what it has: a few events when quiet, hundreds at peak).
Deterministic (a seeded generator), so runs compare.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

SYMBOLS = ("NVDA", "MSFT", "AAPL", "AMZN", "TSLA", "META", "AMD", "SPY")
CONDITIONS = ((), (12,), (14, 41), (37,), (12, 37), (41,), (53,), (10, 12))
DAY_START_MS = 1_764_081_000_000  # 2025-11-25 14:30 UTC (09:30 New York)


@dataclass(frozen=True)
class FrameMix:
    """The shape of the frames: mean events per frame and the share of each event type."""

    mean_events: int = 500
    quote_share: float = 0.2
    symbols: tuple[str, ...] = SYMBOLS
    trades_only: bool = False


def polygon_frames(count: int, mix: FrameMix = FrameMix(), seed: int = 7) -> list[bytes]:
    """``count`` frames; the minute advances every 20 frames, closing it with AM bars."""
    rng = random.Random(seed)
    frames: list[bytes] = []
    sequence = dict.fromkeys(mix.symbols, 0)
    price = {s: 50.0 + 40 * i for i, s in enumerate(mix.symbols)}
    now = DAY_START_MS
    for index in range(count):
        size = max(1, int(rng.uniform(0.2, 1.8) * mix.mean_events))
        events: list[dict[str, object]] = []
        for _ in range(size):
            symbol = rng.choice(mix.symbols)
            now += rng.choice((0, 0, 0, 1))
            sequence[symbol] += rng.randint(1, 3)
            price[symbol] = round(max(1.0, price[symbol] + rng.choice((-0.01, 0.0, 0.01))), 2)
            if not mix.trades_only and rng.random() < mix.quote_share:
                events.append(_quote(rng, symbol, price[symbol], now, sequence[symbol]))
            else:
                events.append(_trade(rng, symbol, price[symbol], now, sequence[symbol]))
        if not mix.trades_only and index % 20 == 19:
            minute = now // 60_000 * 60_000
            events.extend(_bar(rng, symbol, price[symbol], minute) for symbol in mix.symbols)
        frames.append(json.dumps(events).encode())
    return frames


def event_count(frame: bytes) -> int:
    return len(json.loads(frame))


def _trade(
    rng: random.Random, symbol: str, price: float, now: int, sequence: int
) -> dict[str, object]:
    trade: dict[str, object] = {
        "ev": "T",
        "sym": symbol,
        "i": str(rng.randint(1, 99_999_999_999_999)),
        "x": rng.choice((4, 11, 12, 15, 19)),
        "p": price,
        "s": rng.choice((1, 5, 10, 50, 100, 100, 100, 200, 300, 500)),
        "t": now,
        "q": sequence,
        "z": rng.choice((1, 2, 3)),
    }
    conditions = rng.choice(CONDITIONS)
    if conditions:
        trade["c"] = list(conditions)
    if trade["x"] == 4:  # off-exchange (TRF) prints carry the TRF id and time
        trade["trfi"] = 202
        trade["trft"] = now - rng.randint(0, 5)
    return trade


def _quote(
    rng: random.Random, symbol: str, price: float, now: int, sequence: int
) -> dict[str, object]:
    return {
        "ev": "Q",
        "sym": symbol,
        "bx": rng.choice((11, 12, 15)),
        "bp": round(price - 0.01, 2),
        "bs": rng.randint(1, 30),
        "ax": rng.choice((11, 12, 15)),
        "ap": round(price + 0.01, 2),
        "as": rng.randint(1, 30),
        "c": 0,
        "i": [604],
        "t": now,
        "q": sequence,
        "z": 3,
    }


def _bar(rng: random.Random, symbol: str, price: float, minute: int) -> dict[str, object]:
    return {
        "ev": "AM",
        "sym": symbol,
        "v": rng.randint(1_000, 90_000),
        "av": rng.randint(1_000_000, 9_000_000),
        "op": round(price * 0.99, 2),
        "vw": price,
        "o": price,
        "c": price,
        "h": round(price + 0.05, 2),
        "l": round(price - 0.05, 2),
        "a": price,
        "z": 112,
        "s": minute - 60_000,
        "e": minute,
    }
