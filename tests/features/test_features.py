"""Feature definitions, the missing-bar rule, and batch/incremental parity (1e-9)."""

from __future__ import annotations

import copy
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from its_common.calendar import NEW_YORK, sessions_between
from its_common.features import (
    FEATURE_NAMES,
    FEATURE_SPEC,
    FEATURE_SPEC_HASH,
    Bar,
    BarArrays,
    SymbolFeatures,
    batch_features,
    spec_hash,
)
from its_common.features.spec import INDEX
from tests.features.helpers import (
    THANKSGIVING_WEEK,
    random_bars,
    replay,
    scaled,
    session_minutes,
    simulated_bars,
    week_sessions,
)

TOL = 1e-9


def test_spec_hash_is_stable_and_tracks_changes():
    # Pinned: a change to any definition must change this value (and bundles trained on the
    # old one are then refused). Update it only together with the spec's version.
    assert FEATURE_SPEC_HASH == "43df8df3cfd78460502561f8cf45a7375c48ba3b09f1c0e6b1f651e4a4cb4694"
    assert spec_hash() == FEATURE_SPEC_HASH
    changed = copy.deepcopy(FEATURE_SPEC)
    changed["features"][2]["window"] = 6
    assert spec_hash(changed) != FEATURE_SPEC_HASH
    assert [f["name"] for f in FEATURE_SPEC["features"]] == list(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == 12


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batch_and_incremental_agree_on_random_days(seed):
    sessions = week_sessions()  # 5 sessions: Thanksgiving holiday and the early close
    # Drop session 2's first minute (filled from the previous session's close) and a run of
    # five minutes in session 3, on top of ~3 % random missing minutes.
    opens = np.cumsum([0] + [s.minutes for s in sessions])
    bars = random_bars(
        sessions, seed, drop_rows=[int(opens[1]), *range(int(opens[2]) + 50, int(opens[2]) + 55)]
    )
    grid, batch = batch_features(bars, sessions)
    assert grid.filled_count > 10
    assert grid.filled[opens[1]] and grid.filled[opens[2] + 52]

    incremental, _state = replay(bars, grid)
    pushed = np.isfinite(incremental[:, 0])
    assert pushed.sum() == len(bars)
    assert np.isfinite(batch[pushed]).all()
    assert np.max(np.abs(batch[pushed] - incremental[pushed])) <= TOL

    # Pushing every minute (None for the missing ones) reproduces every ready row.
    every, state2 = replay(bars, grid, explicit_missing=True)
    ready = grid.ready
    assert np.array_equal(np.isfinite(every[:, 0]), ready)
    assert np.max(np.abs(batch[ready] - every[ready])) <= TOL
    assert state2.filled_count == grid.filled_count


def test_batch_and_incremental_agree_on_simulated_days():
    first, last = date(2025, 3, 6), date(2025, 3, 12)  # 5 sessions across a weekend
    sessions = sessions_between(first, last)
    for full in simulated_bars(first, last).values():
        # Remove one bar mid-session to exercise the fill on real-looking data.
        keep = np.ones(len(full), dtype=bool)
        keep[500] = False
        bars = BarArrays(*(getattr(full, f)[keep] for f in BarArrays.__dataclass_fields__))
        grid, batch = batch_features(bars, sessions)
        assert grid.filled_count >= 1
        incremental, _ = replay(bars, grid, explicit_missing=True)
        assert np.isfinite(batch).all()
        assert np.max(np.abs(batch - incremental)) <= TOL


def test_definitions_match_a_naive_pandas_computation():
    sessions = week_sessions()[:1]
    bars = random_bars(sessions, seed=11, drop=0.0)
    _grid, values = batch_features(bars, sessions)
    c = pd.Series(bars.close)
    v = pd.Series(bars.volume)
    p0 = bars.open[0]
    prev = c.shift(1).fillna(p0)
    ret = c / prev - 1
    typical = (bars.high + bars.low + bars.close) / 3
    price = np.where(np.isfinite(bars.vwap), bars.vwap, typical)
    diff = c - prev
    gains = diff.clip(lower=0).rolling(14, min_periods=1).sum()
    losses = (-diff).clip(lower=0).rolling(14, min_periods=1).sum()
    local = pd.to_datetime(bars.ts, unit="ms", utc=True).tz_convert(NEW_YORK)
    expected = {
        "returns": ret,
        "log_returns": np.log(c / prev),
        "sma_5": c.rolling(5, min_periods=1).mean() / c - 1,
        "sma_20": c.rolling(20, min_periods=1).mean() / c - 1,
        "ema_12": c.ewm(span=12, adjust=False).mean() / c - 1,
        "volatility": ret.rolling(20, min_periods=1).std(ddof=0).fillna(0),
        "rsi": (gains / (gains + losses)).fillna(0.5) - 0.5,
        "volume_ratio": (v / v.rolling(20, min_periods=1).mean()).fillna(1.0),
        "vwap": np.cumsum(price * bars.volume) / np.cumsum(bars.volume) / c - 1,
        "hour": local.hour / 24,
        "minute": local.minute / 60,
        "close": np.log(c / p0),
    }
    for name, want in expected.items():
        got = values[:, INDEX[name]]
        np.testing.assert_allclose(got, np.asarray(want, dtype=float), atol=1e-9, err_msg=name)
    assert values[0, INDEX["hour"]] == 9 / 24 and values[0, INDEX["minute"]] == 30 / 60
    # Warm-up: every feature is defined from the first minute.
    assert np.isfinite(values).all()


def test_hour_is_new_york_time_across_the_dst_change():
    sessions = sessions_between(date(2025, 10, 31), date(2025, 11, 3))  # DST ends Nov 2
    bars = random_bars(sessions, seed=3, drop=0.0)
    grid, values = batch_features(bars, sessions)
    firsts = np.asarray(grid.session_start[:-1])
    assert np.all(values[firsts, INDEX["hour"]] == 9 / 24)
    assert np.all(values[firsts, INDEX["minute"]] == 0.5)
    assert np.all(values[firsts + 389, INDEX["hour"]] == 15 / 24)


def test_features_do_not_depend_on_the_price_level():
    sessions = week_sessions()
    bars = random_bars(sessions, seed=7)
    grid, base = batch_features(bars, sessions)
    ready = grid.ready
    for factor in (0.01, 3.7, 250.0):
        _, other = batch_features(scaled(bars, factor), sessions)
        assert np.array_equal(np.isnan(base), np.isnan(other))
        assert np.max(np.abs(base[ready] - other[ready])) <= 1e-9


def test_sessions_are_independent():
    sessions = week_sessions()
    opens = np.cumsum([0] + [s.minutes for s in sessions])
    bars = random_bars(sessions, seed=8, drop=0.0)
    _, base = batch_features(bars, sessions)
    # Rewrite the whole first session's prices: the second session's features do not move.
    first = bars.ts < session_minutes(sessions)[opens[1]]
    noise = np.where(first, np.random.default_rng(0).uniform(0.9, 1.1, len(bars)), 1.0)
    changed = BarArrays(
        ts=bars.ts,
        open=bars.open * noise,
        high=bars.high * noise,
        low=bars.low * noise,
        close=bars.close * noise,
        volume=bars.volume * noise**3,
        vwap=bars.vwap * noise,
    )
    _, other = batch_features(changed, sessions)
    assert np.max(np.abs(base[opens[1] :] - other[opens[1] :])) == 0.0
    assert np.max(np.abs(base[: opens[1]] - other[: opens[1]])) > 1e-3
    # Session start: returns measured from the session's own open, close anchored at it.
    row = opens[1]
    assert base[row, INDEX["close"]] == pytest.approx(math.log(bars.close[row] / bars.open[row]))
    assert base[row, INDEX["sma_20"]] == 0.0 and base[row, INDEX["volatility"]] == 0.0


def test_missing_bar_rule():
    sessions = week_sessions()[:1]
    ts = session_minutes(sessions)
    state = SymbolFeatures()
    # Nothing known yet: a missing minute gives no vector and is not counted.
    assert state.push(int(ts[0]), None) is None
    assert state.filled_count == 0
    first = state.push(int(ts[1]), Bar(int(ts[1]), 100.0, 101.0, 99.5, 100.5, 1000.0))
    assert first is not None
    assert first[INDEX["returns"]] == pytest.approx(0.005)  # anchored at that bar's open
    # Minute 2 missing, minute 3 arrives: minute 2 is filled with close 100.5 and volume 0.
    third = state.push(int(ts[3]), Bar(int(ts[3]), 100.5, 102.0, 100.0, 101.5, 3000.0))
    assert third is not None
    assert state.filled_count == 1
    assert third[INDEX["returns"]] == pytest.approx(101.5 / 100.5 - 1)
    assert third[INDEX["volume_ratio"]] == pytest.approx(3000 / (4000 / 3))
    # An explicit missing minute: returns 0, volume ratio 0, counted.
    fourth = state.push(int(ts[4]), None)
    assert fourth is not None
    assert fourth[INDEX["returns"]] == 0.0 and fourth[INDEX["volume_ratio"]] == 0.0
    assert state.filled_count == 2
    # The same in the batch form (minute 0 not ready, minutes 2 and 4 filled).
    bars = BarArrays.from_columns(
        [ts[1], ts[3]], [100.0, 100.5], [101.0, 102.0], [99.5, 100.0], [100.5, 101.5],
        [1000.0, 3000.0],
    )  # fmt: skip
    grid, values = batch_features(bars, sessions)
    assert not grid.ready[0] and np.isnan(values[0]).all()
    assert np.max(np.abs(values[3] - third)) <= TOL and np.max(np.abs(values[4] - fourth)) <= TOL
    assert grid.filled_count == len(ts) - 3  # every later minute is filled, minute 0 not counted
    # A non-positive close counts as missing.
    assert state.push(int(ts[5]), Bar(int(ts[5]), 1.0, 1.0, 1.0, 0.0, 10.0)) is not None
    assert state.filled_count == 3


def test_incremental_refuses_old_minutes_and_ignores_closed_hours():
    sessions = week_sessions()[:1]
    ts = session_minutes(sessions)
    state = SymbolFeatures()
    bar = Bar(int(ts[10]), 10.0, 10.0, 10.0, 10.0, 5.0)
    assert state.push(int(ts[10]), bar) is not None
    with pytest.raises(ValueError, match="not after"):
        state.push(int(ts[10]), bar)
    with pytest.raises(ValueError, match="not after"):
        state.push(int(ts[3]), bar)
    after_close = int(sessions[0].close.timestamp() * 1000) + 60_000
    assert state.push(after_close, bar) is None
    # The carried close fills the next session's missing open minute.
    nxt = sessions_between(THANKSGIVING_WEEK[0], THANKSGIVING_WEEK[1])[1]
    open_ms = int(nxt.open.timestamp() * 1000)
    vec = state.push(open_ms + 60_000, Bar(open_ms + 60_000, 11.0, 11.0, 11.0, 11.0, 5.0))
    assert vec is not None
    assert vec[INDEX["close"]] == pytest.approx(math.log(11.0 / 10.0))
    assert state.filled_count == 1


def test_last_close_seeds_the_first_session():
    sessions = week_sessions()[:2]
    bars = random_bars(sessions, seed=4, drop=0.0, drop_rows=[0, 1])
    grid, values = batch_features(bars, sessions, last_close=99.0)
    assert grid.ready.all() and grid.filled[0] and grid.filled[1]
    assert values[0, INDEX["close"]] == 0.0
    incremental, _ = replay(bars, grid, explicit_missing=True, last_close=99.0)
    assert np.max(np.abs(incremental - values)) <= TOL
