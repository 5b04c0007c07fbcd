"""The feature specification: names, order, exact definitions, windows and warm-up rules.

This module is the single written definition of ITS's per-symbol features; ``docs/features.md``
explains it for people, :mod:`its_common.features.batch` (whole history, numpy) and
:mod:`its_common.features.incremental` (one bar at a time, live) implement it and are tested to
agree to 1e-9. :data:`FEATURE_SPEC_HASH` is a SHA-256 of the canonical JSON of
:data:`FEATURE_SPEC`; a model bundle records it, and inference refuses a bundle whose hash
differs from the running code's. Change anything here that changes a value, and bump
``version`` so the hash changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "returns",
    "log_returns",
    "sma_5",
    "sma_20",
    "ema_12",
    "volatility",
    "rsi",
    "volume_ratio",
    "vwap",
    "hour",
    "minute",
    "close",
)
N_FEATURES: Final = len(FEATURE_NAMES)
INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}

SMA_SHORT: Final = 5
SMA_LONG: Final = 20
EMA_SPAN: Final = 12
EMA_ALPHA: Final = 2.0 / (EMA_SPAN + 1)
EMA_BETA: Final = 1.0 - EMA_ALPHA
VOLATILITY_WINDOW: Final = 20
RSI_WINDOW: Final = 14
VOLUME_WINDOW: Final = 20
MAX_WINDOW: Final = max(SMA_SHORT, SMA_LONG, VOLATILITY_WINDOW, RSI_WINDOW, VOLUME_WINDOW)
BAR_MS: Final = 60_000

# Notation used below, for one symbol and one regular session:
#   k = 0, 1, ... the minute index from the session's first *anchored* minute (normally the open)
#   o_k, c_k, v_k  open, close, volume of minute k's bar (after the missing-bar rule)
#   p_k            the bar's price for the session VWAP: the bar's own VWAP when given (finite,
#                  > 0), else the typical price (h + l + c) / 3
#   P0             the session reference price = o_0
#   prev_k         c_{k-1} for k >= 1, P0 for k = 0 (so windows never reach into the previous
#                  session: every feature is session-local)
#   n_N(k)         min(k + 1, N): the number of values in an N-window (the warm-up rule: a window
#                  holds what the session has so far, expanding until it is full)
#   W_N(x)_k       sum of x_j for j in (k - n_N(k), k], computed as S_k - S_{k-N} of the
#                  session-running sum S (S_{j} = 0 for j < 0)
FEATURE_SPEC: Final[dict[str, Any]] = {
    "name": "its-minute-features",
    "version": 1,
    "dtype": "float64",
    "bar": {
        "interval": "1 minute",
        "timestamp": "bar start, UTC milliseconds",
        "hours": "regular session only (exchange calendar XNYS, early closes included); "
        "bars outside it are ignored",
        "available": "at the bar's end (start + 60 s); the vector of bar t is known at t's close",
    },
    "session": {
        "scope": "every feature is session-local: windows, EMA, VWAP and the reference price "
        "reset at each session open",
        "reference_price": "P0 = open of the session's first minute",
        "prev_close": "c_{k-1}; for the first minute, P0",
    },
    "missing_bar": {
        "rule": "a regular-session minute without a bar (or with a non-finite or non-positive "
        "close) is forward-filled: o = h = l = c = the last known close (of this or an "
        "earlier session), v = 0, and it does not move the VWAP; each fill is counted",
        "no_history": "minutes before the first bar ever seen have no features (NaN / None); "
        "the session is then anchored at that first bar (k = 0 there)",
    },
    "warm_up": "windows expand from the session's first minute until full: an N-window over "
    "k < N - 1 uses the k + 1 values so far; every feature is defined from the first minute",
    "features": [
        {"name": "returns", "definition": "c_k / prev_k - 1"},
        {"name": "log_returns", "definition": "ln(c_k / prev_k)"},
        {
            "name": "sma_5",
            "window": SMA_SHORT,
            "definition": "(W_5(c)_k / n_5(k)) / c_k - 1",
        },
        {
            "name": "sma_20",
            "window": SMA_LONG,
            "definition": "(W_20(c)_k / n_20(k)) / c_k - 1",
        },
        {
            "name": "ema_12",
            "window": EMA_SPAN,
            "definition": "e_k / c_k - 1; e_0 = c_0, e_k = a * c_k + (1 - a) * e_{k-1}, "
            "a = 2 / (12 + 1)",
        },
        {
            "name": "volatility",
            "window": VOLATILITY_WINDOW,
            "definition": "population std (ddof 0) of the last n_20(k) returns: "
            "sqrt(max(0, W_20(r^2)/n - (W_20(r)/n)^2))",
        },
        {
            "name": "rsi",
            "window": RSI_WINDOW,
            "definition": "G / (G + L) - 0.5 with G = W_14(max(d, 0)), L = W_14(max(-d, 0)), "
            "d_k = c_k - prev_k (Cutler's RSI / 100, centred); 0 when G + L = 0",
        },
        {
            "name": "volume_ratio",
            "window": VOLUME_WINDOW,
            "definition": "v_k / (W_20(v)_k / n_20(k)); 1 when that mean is 0",
        },
        {
            "name": "vwap",
            "definition": "VWAP_k / c_k - 1; VWAP_k = sum_{j<=k} p_j v_j / sum_{j<=k} v_j "
            "(session-anchored); VWAP_k = c_k while the session's volume is 0",
        },
        {
            "name": "hour",
            "definition": "New York hour (0-23) of the bar start / 24",
        },
        {
            "name": "minute",
            "definition": "New York minute of the hour (0-59) of the bar start / 60",
        },
        {"name": "close", "definition": "ln(c_k / P0): log change since the session open"},
    ],
    "order": list(FEATURE_NAMES),
}


def canonical_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: dict[str, Any] | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of a feature spec (default: this one)."""
    return hashlib.sha256(
        canonical_json(FEATURE_SPEC if spec is None else spec).encode()
    ).hexdigest()


FEATURE_SPEC_HASH: Final = spec_hash()
