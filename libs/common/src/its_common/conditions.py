"""Polygon's trade (sale) conditions and which aggregate fields each one may update.

The consolidated tape's rules (the CTA and UTP specifications' sale-condition matrices, as Polygon
publishes them in ``/v3/reference/conditions`` under ``update_rules.consolidated``) decide which
trades set a bar's open/close, its high/low and its volume. A trade with several conditions
updates a field only if every one of its conditions allows it. VWAP follows volume (Polygon's
maintainers, polygon-io/issues #205), so an odd lot moves a bar's VWAP and volume but not its
prices. A bucket without a single trade that may set a price produces no bar (its volume still
counts in the day's totals; polygon-io/issues #70). The table and its source are documented in
services/marketsim/README.md.

This is the one place ITS keeps these rules: the synthetic market aggregates with them, and any
code that builds bars from trades must use :func:`updates` rather than its own list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple


class UpdateRule(NamedTuple):
    """What a trade with this condition updates in a consolidated aggregate."""

    name: str
    high_low: bool
    open_close: bool
    volume: bool


# Polygon condition id -> consolidated update rule. Ids not listed (and a trade with no
# conditions, a regular sale) update every field.
RULES: Final[dict[int, UpdateRule]] = {
    0: UpdateRule("Regular Sale", True, True, True),
    1: UpdateRule("Acquisition", True, True, True),
    2: UpdateRule("Average Price Trade", False, False, True),
    3: UpdateRule("Automatic Execution", True, True, True),
    4: UpdateRule("Bunched Trade", True, True, True),
    5: UpdateRule("Bunched Sold Trade", True, False, True),
    7: UpdateRule("Cash Sale", False, False, True),
    8: UpdateRule("Closing Prints", True, True, True),
    9: UpdateRule("Cross Trade", True, True, True),
    10: UpdateRule("Derivatively Priced", True, False, True),
    11: UpdateRule("Distribution", True, True, True),
    # The CTA/UTP matrices say volume only; Polygon's aggregates nevertheless carry pre- and
    # post-market bars built from these trades, so for bars they count like regular sales.
    12: UpdateRule("Form T / Extended Hours", True, True, True),
    13: UpdateRule("Extended Hours (Sold Out Of Sequence)", False, False, True),
    14: UpdateRule("Intermarket Sweep", True, True, True),
    15: UpdateRule("Market Center Official Close", False, False, False),
    16: UpdateRule("Market Center Official Open", False, False, False),
    17: UpdateRule("Market Center Opening Trade", True, True, True),
    18: UpdateRule("Market Center Reopening Trade", True, True, True),
    19: UpdateRule("Market Center Closing Trade", True, True, True),
    20: UpdateRule("Next Day", False, False, True),
    21: UpdateRule("Price Variation Trade", False, False, True),
    22: UpdateRule("Prior Reference Price", True, False, True),
    23: UpdateRule("Rule 155 Trade (AMEX)", True, True, True),
    24: UpdateRule("Rule 127 (NYSE)", True, True, True),
    25: UpdateRule("Opening Prints", True, True, True),
    27: UpdateRule("Stopped Stock (Regular Trade)", True, True, True),
    28: UpdateRule("Re-Opening Prints", True, True, True),
    29: UpdateRule("Seller", False, False, True),
    30: UpdateRule("Sold Last", True, True, True),
    32: UpdateRule("Sold (Out Of Sequence)", True, False, True),
    33: UpdateRule("Sold (Out Of Sequence) and Stopped Stock", True, False, True),
    34: UpdateRule("Split Trade", True, True, True),
    35: UpdateRule("Stock Option", True, True, True),
    36: UpdateRule("Yellow Flag Regular Trade", True, True, True),
    37: UpdateRule("Odd Lot Trade", False, False, True),
    38: UpdateRule("Corrected Consolidated Close (per listing market)", False, False, False),
    41: UpdateRule("Trade Thru Exempt", True, True, True),
    52: UpdateRule("Contingent Trade", False, False, True),
    53: UpdateRule("Qualified Contingent Trade", False, False, True),
}
REGULAR: Final = UpdateRule("Regular Sale", True, True, True)

# Bits of :func:`update_bits`.
HIGH_LOW: Final = 1
OPEN_CLOSE: Final = 2
VOLUME: Final = 4


def updates(conditions: Iterable[int]) -> UpdateRule:
    """The fields a trade with ``conditions`` updates (all of its conditions must allow one)."""
    high_low = open_close = volume = True
    for code in conditions:
        rule = RULES.get(code, REGULAR)
        high_low &= rule.high_low
        open_close &= rule.open_close
        volume &= rule.volume
    return UpdateRule("", high_low, open_close, volume)


def update_bits(conditions: Iterable[int]) -> int:
    """:func:`updates` as a bit set of :data:`HIGH_LOW`, :data:`OPEN_CLOSE` and :data:`VOLUME`."""
    rule = updates(conditions)
    return HIGH_LOW * rule.high_low + OPEN_CLOSE * rule.open_close + VOLUME * rule.volume
