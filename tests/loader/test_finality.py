"""The finality rule and the trades audit's comparison (pure functions)."""

from __future__ import annotations

from its_loader.finality import MINUTE_MS, SETTLE_MS, final_until_ms, is_final
from its_loader.trades_audit import compare_trades, minute_runs

M = 1_795_185_600_000  # a minute boundary


def test_a_minute_is_final_once_closed_plus_the_settle_delay() -> None:
    assert SETTLE_MS == 60_000
    # 09:30 (M) closes at M + 60 s and is final from M + 120 s on, not a millisecond earlier.
    assert not is_final(M, final_until_ms(M + 30_000))  # in progress
    assert not is_final(M, final_until_ms(M + 119_999))  # closed, settling
    assert is_final(M, final_until_ms(M + 120_000))
    assert final_until_ms(M + 120_000) == M + MINUTE_MS
    assert final_until_ms(M + 179_999) == M + MINUTE_MS  # a minute boundary, always


def test_compare_trades_kinds_and_repair_windows() -> None:
    minutes = [M + i * MINUTE_MS for i in range(5)]
    stored = {minutes[0]: (3, 300.0), minutes[1]: (2, 200.0), minutes[3]: (4, 400.0)}
    rest = {minutes[0]: (3, 300.0), minutes[1]: (3, 300.0), minutes[2]: (1, 50.0)}
    rest[minutes[3]] = (4, 450.0)
    result = compare_trades("NVDA", minutes, stored, rest)
    kinds = {f.minute_ms: f.kind for f in result.findings}
    assert kinds == {minutes[1]: "missing", minutes[2]: "missing", minutes[3]: "mismatch"}
    assert (result.stored_trades, result.rest_trades) == (9, 11)
    extra = compare_trades("NVDA", minutes, {minutes[4]: (1, 1.0)}, {})
    assert [f.kind for f in extra.findings] == ["extra"]
    assert minute_runs([minutes[3], minutes[1], minutes[2]]) == [(minutes[1], minutes[4])]
    assert minute_runs([minutes[0], minutes[2]]) == [
        (minutes[0], minutes[1]),
        (minutes[2], minutes[3]),
    ]
