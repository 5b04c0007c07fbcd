"""``its-marketsim facts``: the synthetic market shows the stylized facts of a real one."""

from __future__ import annotations

import pytest

from its_common.simmarket.config import SimConfig
from its_marketsim.__main__ import main
from its_marketsim.facts import measure

# A reduced trade rate keeps the test fast; the prices, volatility, auctions, sizes and
# quotes follow the same model as the full-rate market.
REDUCED = {"NVDA": 30_000.0, "MSFT": 30_000.0}


def test_the_synthetic_market_shows_the_stylized_facts() -> None:
    facts = measure(SimConfig(symbols=("NVDA", "MSFT"), trades_per_day=REDUCED), 8)
    outside = [f"{f.name}: {f.value:.4g} not in [{f.low}, {f.high}]" for f in facts if not f.ok]
    assert not outside, outside
    names = {f.name for f in facts}
    for fact in (
        "NVDA excess kurtosis of 1-min returns",
        "NVDA ACF of |r|, lag 1",
        "MSFT daily realized vol, coefficient of variation",
        "NVDA/MSFT correlation of 1-min returns",
        "NVDA last 30 min / first 30 min volume",
        "MSFT closing cross share of day volume",
        "NVDA trades inside the prevailing quote",
        "MSFT T+Q merged by sequence: time steps backwards",
        "mean trade size, cheaper / dearer symbol",
    ):
        assert fact in names


def test_the_command_prints_the_table_and_fails_outside_the_ranges(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["facts", "--sessions", "3", "--trades-per-day", "20000", "--correlation", "0"]
    assert main(args) == 1  # uncorrelated symbols: outside the real range
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["fact", "measured", "real", "range", "ok"]
    row = next(line for line in out.splitlines() if "correlation of 1-min returns" in line)
    assert row.endswith("NO")
    assert any(line.endswith("yes") for line in out.splitlines())
