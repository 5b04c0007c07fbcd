"""Polygon's sale-condition rules: the table (its_common.conditions) and the vectorized bars."""

from __future__ import annotations

import numpy as np

from its_common import conditions
from its_common.simmarket.daydata import aggregate, update_bits

# Condition sets a consolidated tape shows, each with its expected (high/low, open/close, volume).
CASES: dict[tuple[int, ...], tuple[bool, bool, bool]] = {
    (): (True, True, True),
    (14,): (True, True, True),
    (37,): (False, False, True),
    (14, 37): (False, False, True),
    (12,): (True, True, True),  # extended-hours bars exist (Polygon's aggregates)
    (12, 37): (False, False, True),
    (2,): (False, False, True),
    (10,): (True, False, True),
    (22,): (True, False, True),
    (32,): (True, False, True),
    (15,): (False, False, False),
    (16,): (False, False, False),
    (17,): (True, True, True),
    (19,): (True, True, True),
    (53,): (False, False, True),
    (999,): (True, True, True),  # unknown: a regular sale
}


def test_the_table_combines_conditions_by_and() -> None:
    for codes, expected in CASES.items():
        rule = conditions.updates(codes)
        assert (rule.high_low, rule.open_close, rule.volume) == expected, codes


def _reference(
    t: list[int], price: list[float], size: list[int], codes: list[tuple[int, ...]], width: int
) -> list[tuple[int, float, float, float, float, int, float, int]]:
    """Bars trade by trade, the slow obvious way."""
    buckets: dict[int, list[int]] = {}
    for i, ts in enumerate(t):
        buckets.setdefault(ts // width * width, []).append(i)
    out = []
    for start, rows in sorted(buckets.items()):
        rules = [conditions.updates(codes[i]) for i in rows]
        oc = [i for i, r in zip(rows, rules, strict=True) if r.open_close]
        hl = [i for i, r in zip(rows, rules, strict=True) if r.high_low or r.open_close]
        vol = [i for i, r in zip(rows, rules, strict=True) if r.volume]
        if not hl:
            continue  # no trade may set a price: no bar
        first, last = (oc[0], oc[-1]) if oc else (hl[0], hl[-1])
        volume = sum(size[i] for i in vol)
        value = sum(price[i] * size[i] for i in vol)
        high, low = max(price[i] for i in hl), min(price[i] for i in hl)
        out.append((start, price[first], high, low, price[last], volume, value, len(vol)))
    return out


def test_vectorized_bars_match_the_trade_by_trade_rules() -> None:
    rng = np.random.default_rng(5)
    table = list(CASES)
    n = 4_000
    t = np.sort(rng.integers(0, 120_000, n)).astype(np.int64)
    price = np.round(100 + rng.standard_normal(n), 2)
    size = rng.integers(1, 500, n).astype(np.int32)
    weights = np.array([30, 5, 40, 5, 2, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1], dtype=np.float64)
    cond = rng.choice(len(table), n, p=weights / weights.sum())
    bars = aggregate(t, price, size, 100, 0, update_bits(table)[cond])
    expected = _reference(
        t.tolist(), price.tolist(), size.tolist(), [table[c] for c in cond.tolist()], 100
    )
    assert len(bars) == len(expected) and len(expected) > 100
    # some buckets hold only trades that set no price: they have no bar
    assert len(expected) < len(np.unique(t // 100))
    for i, (start, o, h, low, c, v, value, count) in enumerate(expected):
        assert int(bars.start[i]) == start
        assert (bars.open[i], bars.high[i], bars.low[i], bars.close[i]) == (o, h, low, c)
        assert int(bars.volume[i]) == v and int(bars.count[i]) == count
        assert abs(float(bars.value[i]) - value) < 1e-6


def test_regular_sales_take_the_plain_path() -> None:
    t = np.array([0, 10, 1_500], dtype=np.int64)
    price = np.array([1.0, 3.0, 2.0])
    size = np.array([5, 1, 2], dtype=np.int32)
    plain = aggregate(t, price, size, 1_000)
    ruled = aggregate(t, price, size, 1_000, 0, update_bits([(), (37,)])[np.array([0, 1, 0])])
    assert plain.high.tolist() == [3.0, 2.0] and ruled.high.tolist() == [1.0, 2.0]
    assert plain.volume.tolist() == ruled.volume.tolist() == [6, 2]
