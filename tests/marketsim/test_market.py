"""The synthetic market: determinism, bars versus trades, calendar, realism of the shapes."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import numpy as np

from its_common.conditions import updates
from its_common.events import MinuteAgg, Trade, decode_frame
from its_common.simmarket.config import SimConfig
from its_common.simmarket.market import MarketGenerator
from its_common.simmarket.sessions import trading_day
from its_marketsim.app import Simulator
from tests.marketsim.support import config, open_client, recv_frame

MONDAY = date(2025, 11, 3)


def generator(cfg: SimConfig | None = None, anchor: date = MONDAY) -> MarketGenerator:
    return MarketGenerator(cfg or config(), anchor)


def test_same_seed_same_day_same_trades_in_any_order() -> None:
    first = generator().day(MONDAY)
    # another generator visits other days first: the values do not depend on the path taken
    other = generator()
    other.day(date(2025, 11, 5))
    other.day(date(2025, 10, 30))
    second = other.day(MONDAY)
    assert first is not None and second is not None
    for name in ("t_ns", "price", "size", "exchange", "cond", "seq", "report_ms", "sym"):
        assert np.array_equal(getattr(first.trades, name), getattr(second.trades, name)), name
    different = generator(config(seed=7)).day(MONDAY)
    assert different is not None
    assert not np.array_equal(first.trades.price[:100], different.trades.price[:100])


async def test_same_seed_same_websocket_events() -> None:
    async def first_events() -> list[bytes]:
        async with Simulator(config()) as sim:
            ws = await open_client(sim.ws_port, topics="T.*,AM.*")
            frames = [await recv_frame(ws) for _ in range(30)]
            await ws.close()
            return frames

    assert await first_events() == await first_events()


def test_configured_symbol_order_does_not_change_values() -> None:
    a = generator(config(symbols=("NVDA", "MSFT"))).day(MONDAY)
    b = generator(config(symbols=("MSFT", "NVDA"))).day(MONDAY)
    assert a is not None and b is not None
    ta, tb = a.symbol_trades("NVDA"), b.symbol_trades("NVDA")
    assert ta is not None and tb is not None
    assert np.array_equal(ta.price, tb.price)


def test_start_price_holds_on_anchor_day_and_levels_chain() -> None:
    gen = generator(config(start_prices={"NVDA": 123.0}))
    assert gen.level(MONDAY)[0] == 123.0
    day = gen.day(MONDAY)
    assert day is not None
    nvda = day.symbol_trades("NVDA")
    assert nvda is not None
    assert abs(float(nvda.price[0]) / 123.0 - 1) < 0.05
    later = gen.level(date(2025, 11, 10))
    earlier = gen.level(date(2025, 10, 27))
    assert 0.5 < later[0] / 123.0 < 2 and 0.5 < earlier[0] / 123.0 < 2


def test_realistic_shapes() -> None:
    day = generator(config(trades_per_day={"NVDA": 200_000, "MSFT": 100_000})).day(MONDAY)
    assert day is not None
    session = trading_day(MONDAY)
    assert session is not None
    nvda = day.symbol_trades("NVDA")
    msft = day.symbol_trades("MSFT")
    assert nvda is not None and msft is not None
    t_ms = nvda.t_ns // 1_000_000
    assert t_ms.min() >= session.open_ms and t_ms.max() < session.close_ms
    per_minute = np.bincount((t_ms - session.open_ms) // 60_000, minlength=390)
    # U shape: busy open and busier close, quieter middle (one day; facts test: many days)
    assert per_minute[:10].mean() > 1.5 * per_minute[150:240].mean()
    assert per_minute[-10:].mean() > 2 * per_minute[150:240].mean()
    sizes = nvda.size
    assert (sizes % 100 == 0).mean() > 0.2 and (sizes < 100).mean() > 0.3  # round and odd lots
    # sizes depend on the price: the dearer stock trades fewer shares, more odd lots
    assert sizes.mean() > msft.size.mean() and (sizes < 100).mean() < (msft.size < 100).mean()
    assert len(np.unique(sizes)) > 200 and sizes.max() > 10_000  # a heavy tail
    # the auctions: one opening and one closing cross, each with its official re-print
    codes = [day.cond_table[c] for c in nvda.cond.tolist()]
    for cross, official in ((17, 16), (19, 15)):
        rows = [i for i, c in enumerate(codes) if cross in c]
        assert len(rows) == 1 and sum(official in c for c in codes) == 1
        i = rows[0]
        assert official in codes[i + 1] and nvda.size[i] == nvda.size[i + 1] > 10_000
    assert 17 in codes[0] and 19 in codes[-2] and 15 in codes[-1]
    assert set(np.unique(nvda.exchange).tolist()) >= {4, 12, 11}
    assert ((nvda.exchange == 4) == (nvda.trf_id > 0)).all()
    odd = nvda.size < 100
    assert all(37 in day.cond_table[c] for c in nvda.cond[odd].tolist())
    # sequence numbers increase in SIP-time order, with gaps
    seq = nvda.seq
    assert (np.diff(seq) > 0).all() and (np.diff(seq) > 1).any()
    # prices on a cent grid or a half-cent midpoint
    assert np.allclose(np.round(nvda.price * 200), nvda.price * 200)
    # correlated returns across symbols (configured 0.6)
    bars_a = day.bars(nvda, 60_000)
    bars_b = day.bars(msft, 60_000)
    common = np.intersect1d(bars_a.start, bars_b.start)
    ra = np.diff(np.log(bars_a.close[np.isin(bars_a.start, common)]))
    rb = np.diff(np.log(bars_b.close[np.isin(bars_b.start, common)]))
    assert np.corrcoef(ra, rb)[0, 1] > 0.3


def test_calendar_holiday_early_close_and_extended_hours() -> None:
    gen = generator()
    assert gen.day(date(2025, 11, 27)) is None  # Thanksgiving
    assert gen.day(date(2025, 11, 29)) is None  # Saturday
    early = gen.day(date(2025, 11, 28))
    assert early is not None
    session = trading_day(date(2025, 11, 28))
    assert session is not None and session.early_close
    t_ms = early.trades.t_ns // 1_000_000
    assert t_ms.max() < session.close_ms  # 13:00 New York
    extended = generator(config(extended_hours=True)).day(MONDAY)
    regular = gen.day(MONDAY)
    assert extended is not None and regular is not None
    ext_ms = extended.trades.t_ns // 1_000_000
    reg_session = trading_day(MONDAY)
    assert reg_session is not None
    assert ext_ms.min() < reg_session.open_ms and ext_ms.max() >= reg_session.close_ms
    pre = extended.trades.cond[ext_ms < reg_session.open_ms]
    assert all(12 in extended.cond_table[c] for c in pre.tolist())  # Form T
    # pre- and post-market minutes have bars, as Polygon's aggregates do
    bar_starts = extended.table("AM").emit_ms - 60_000
    assert (bar_starts < reg_session.open_ms).sum() > 100
    assert (bar_starts >= reg_session.close_ms).sum() > 100
    # the regular-hours trades are the same with or without extended hours
    inside = (ext_ms >= reg_session.open_ms) & (ext_ms < reg_session.close_ms)
    assert np.array_equal(np.sort(extended.trades.t_ns[inside]), np.sort(regular.trades.t_ns))


async def test_minute_bars_equal_the_aggregation_of_their_trades() -> None:
    cfg = config(late_bar_rate=0.3, symbols=("NVDA",), trades_per_day={"NVDA": 30_000})
    async with Simulator(cfg) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA,AM.NVDA")
        trades: list[Trade] = []
        bars: dict[int, list[MinuteAgg]] = defaultdict(list)
        open_ms = 1762180200000
        horizon = open_ms + 120 * 60_000
        while not trades or trades[-1].timestamp < horizon:
            for event in decode_frame(await recv_frame(ws)):
                if isinstance(event, Trade):
                    trades.append(event)
                elif isinstance(event, MinuteAgg):
                    bars[event.start].append(event)
        await ws.close()
    by_minute: dict[int, list[Trade]] = defaultdict(list)
    for trade in trades:
        by_minute[trade.timestamp // 60_000 * 60_000].append(trade)
    checked = resent = by_rules = 0
    for start, versions in bars.items():
        if start + 16 * 60_000 > horizon:
            continue  # a late report may still be on its way
        final = versions[-1]
        group = sorted(by_minute[start], key=lambda t: (t.timestamp, t.sequence))
        # Polygon's rules, trade by trade: odd lots count in volume and VWAP only
        rules = [updates(t.conditions) for t in group]
        priced = [t for t, r in zip(group, rules, strict=True) if r.open_close]
        ranged = [t for t, r in zip(group, rules, strict=True) if r.high_low]
        counted = [t for t, r in zip(group, rules, strict=True) if r.volume]
        assert final.open == priced[0].price and final.close == priced[-1].price
        assert final.high == max(t.price for t in ranged)
        assert final.low == min(t.price for t in ranged)
        assert final.volume == sum(t.size for t in counted)
        assert isinstance(final.volume, int) and isinstance(final.day_volume, int)
        assert isinstance(final.avg_trade_size, int)
        vwap = sum(t.price * t.size for t in counted) / final.volume
        assert abs(final.vwap - vwap) < 1e-3
        assert final.end - final.start == 60_000
        checked += 1
        by_rules += any(37 in t.conditions for t in group) and group != priced
        if len(versions) > 1:
            resent += 1
            assert versions[0] != final  # the re-send carries corrected values
            assert any(32 in t.conditions for t in group)  # a late report (sold out of sequence)
    assert checked > 60 and resent > 5 and by_rules > 30


async def test_stream_skips_the_holiday_and_respects_the_early_close() -> None:
    from its_common.simmarket.sessions import ny_date

    cfg = config(start="2025-11-26", symbols=("NVDA",), trades_per_day={"NVDA": 5_000})
    async with Simulator(cfg) as sim:
        ws = await open_client(sim.ws_port, topics="AM.NVDA")
        bars: list[MinuteAgg] = []
        while not bars or ny_date(bars[-1].start) < date(2025, 12, 1):
            bars.extend(e for e in decode_frame(await recv_frame(ws)) if isinstance(e, MinuteAgg))
        await ws.close()
    days = sorted({ny_date(b.start) for b in bars})
    assert days[:3] == [date(2025, 11, 26), date(2025, 11, 28), date(2025, 12, 1)]
    friday = [b for b in bars if ny_date(b.start) == date(2025, 11, 28)]
    session = trading_day(date(2025, 11, 28))
    assert session is not None
    assert max(b.end for b in friday) <= session.close_ms  # 13:00 New York
    assert min(b.start for b in friday) >= session.open_ms
