"""The demo market's planted pattern (``SimConfig.demo_pattern``): off by default, exactly the
documented drift when on (nothing random changes), deterministic per seed."""

from __future__ import annotations

from datetime import date
from functools import partial

import numpy as np

from its_common.simmarket import pattern
from its_common.simmarket.config import SimConfig
from its_common.simmarket.market import MarketGenerator
from its_common.simmarket.sessions import trading_day
from tests.marketsim.support import config

MONDAY = date(2025, 11, 3)
EARLY_CLOSE = date(2025, 11, 28)  # the day after Thanksgiving: 13:00 close


def _at(diff: np.ndarray, open_s: int, hh: int, mm: int) -> float:
    """The path difference of the first symbol at hh:mm New York (the open is 09:30)."""
    return float(diff[open_s + ((hh - 9) * 60 + mm - 30) * 60, 0])


def generator(cfg: SimConfig) -> MarketGenerator:
    return MarketGenerator(cfg, MONDAY)


def test_off_by_default() -> None:
    assert SimConfig().demo_pattern is False
    plain = generator(config()).day(MONDAY)
    explicit = generator(config(demo_pattern=False)).day(MONDAY)
    assert plain is not None and explicit is not None
    assert np.array_equal(plain.trades.price, explicit.trades.price)


def test_the_path_differs_by_exactly_the_documented_drift() -> None:
    off, on = generator(config()), generator(config(demo_pattern=True))
    for day in (MONDAY, EARLY_CLOSE):
        session = trading_day(day)
        assert session is not None
        path_off, vol_off = off._path(day)
        path_on, vol_on = on._path(day)
        assert np.array_equal(vol_off, vol_on)
        open_s = (session.open_ms - session.pre_open_ms) // 1000
        diff = path_on - path_off
        # Zero before 10:00, +0.8 % at 10:20, back to 0 at 11:00, ...
        at = partial(_at, diff, open_s)

        assert abs(at(9, 59)) < 1e-12
        assert abs(at(10, 20) - pattern.DEMO_PATTERN_MOVE) < 1e-9
        assert abs(at(10, 10) - pattern.DEMO_PATTERN_MOVE / 2) < 1e-9
        assert abs(at(11, 0)) < 1e-9
        assert abs(at(12, 20) - pattern.DEMO_PATTERN_MOVE) < 1e-9
        assert np.allclose(diff[:, 0], diff[:, 1])  # every symbol shares the cycle
        assert np.max(np.abs(diff[-1])) < 1e-9  # each cycle sums to zero: levels chain as before
        last_hour = 15 if not session.early_close else 12
        assert abs(at(last_hour, 20) - pattern.DEMO_PATTERN_MOVE) < 1e-9
    # no cycle after an early close
    session = trading_day(EARLY_CLOSE)
    assert session is not None
    close_s = (session.close_ms - session.pre_open_ms) // 1000
    assert np.max(np.abs((on._path(EARLY_CLOSE)[0] - off._path(EARLY_CLOSE)[0])[close_s:])) < 1e-9


def test_levels_chain_as_without_the_pattern() -> None:
    off, on = generator(config()), generator(config(demo_pattern=True))
    later = date(2025, 11, 14)
    assert np.allclose(off.level(later), on.level(later), rtol=1e-9)


def test_deterministic_per_seed_and_visible_in_the_trades() -> None:
    first = generator(config(demo_pattern=True)).day(MONDAY)
    second = generator(config(demo_pattern=True)).day(MONDAY)
    plain = generator(config()).day(MONDAY)
    assert first is not None and second is not None and plain is not None
    for name in ("t_ns", "price", "size", "cond", "seq"):
        assert np.array_equal(getattr(first.trades, name), getattr(second.trades, name)), name
    # Only prices move: the same trades at the same times.
    assert np.array_equal(first.trades.t_ns, plain.trades.t_ns)
    assert np.array_equal(first.trades.size, plain.trades.size)
    session = trading_day(MONDAY)
    assert session is not None
    ten_twenty = session.open_ms + 50 * 60_000
    sym = first.trades.sym == 0
    near = sym & (np.abs(first.trades.t_ns // 1_000_000 - ten_twenty) < 5_000)
    ratio = float(np.median(first.trades.price[near] / plain.trades.price[near]))
    assert abs(np.log(ratio) - pattern.DEMO_PATTERN_MOVE) < 0.001


def test_marketsim_setting_and_description() -> None:
    from its_marketsim.config import MarketSimSettings

    assert MarketSimSettings().to_config().demo_pattern is False
    assert MarketSimSettings(demo_pattern=True).to_config().demo_pattern is True
    described = pattern.describe()
    assert described["label"] == "demo market with a planted pattern"
    assert described["name"] == pattern.DEMO_PATTERN_NAME
