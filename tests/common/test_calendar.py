"""Exchange calendar edge cases: holidays, early closes, daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from its_common import calendar


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def test_regular_session_in_winter_is_1430_to_2100_utc() -> None:
    session = calendar.session(date(2026, 11, 24))
    assert session is not None
    assert (session.open, session.close) == (utc(2026, 11, 24, 14, 30), utc(2026, 11, 24, 21))
    assert session.minutes == 390 and not session.early_close
    minutes = session.minute_starts()
    assert minutes[0] == session.open and minutes[-1] == utc(2026, 11, 24, 20, 59)


@pytest.mark.parametrize(
    "holiday",
    [date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1), date(2026, 7, 3), date(2026, 4, 3)],
)
def test_holidays_have_no_session(holiday: date) -> None:
    assert calendar.session(holiday) is None
    assert not calendar.is_trading_day(holiday)


def test_weekend_has_no_session() -> None:
    assert calendar.session(date(2026, 11, 28)) is None


def test_day_after_thanksgiving_closes_early_at_1300_new_york() -> None:
    session = calendar.session(date(2026, 11, 27))
    assert session is not None and session.early_close
    assert session.close == utc(2026, 11, 27, 18, 0)
    assert session.minutes == 210
    assert calendar.is_open(utc(2026, 11, 27, 17, 59))
    assert not calendar.is_open(utc(2026, 11, 27, 18, 0))


def test_christmas_eve_closes_early() -> None:
    session = calendar.session(date(2026, 12, 24))
    assert session is not None and session.close == utc(2026, 12, 24, 18, 0)


def test_dst_start_moves_the_utc_open_one_hour_earlier() -> None:
    before = calendar.session(date(2026, 3, 6))  # Friday, EST
    after = calendar.session(date(2026, 3, 9))  # Monday, EDT (clocks changed on the 8th)
    assert before is not None and after is not None
    assert before.open == utc(2026, 3, 6, 14, 30)
    assert after.open == utc(2026, 3, 9, 13, 30)
    assert before.minutes == after.minutes == 390


def test_dst_end_moves_the_utc_open_back() -> None:
    before = calendar.session(date(2026, 10, 30))
    after = calendar.session(date(2026, 11, 2))
    assert before is not None and after is not None
    assert before.open == utc(2026, 10, 30, 13, 30) and after.open == utc(2026, 11, 2, 14, 30)


def test_is_open_boundaries() -> None:
    assert not calendar.is_open(utc(2026, 11, 24, 14, 29, 59))
    assert calendar.is_open(utc(2026, 11, 24, 14, 30))
    assert calendar.is_open(utc(2026, 11, 24, 20, 59, 59))
    assert not calendar.is_open(utc(2026, 11, 24, 21, 0))


def test_next_session_skips_holiday_and_weekend() -> None:
    # Wednesday evening before Thanksgiving: next session is Friday's short one.
    assert calendar.next_session(utc(2026, 11, 25, 22)).day == date(2026, 11, 27)
    # Friday after the early close: next is Monday.
    assert calendar.next_session(utc(2026, 11, 27, 18, 30)).day == date(2026, 11, 30)
    # During a session: that session.
    assert calendar.next_session(utc(2026, 11, 24, 15)).day == date(2026, 11, 24)


def test_sessions_between_counts_trading_days() -> None:
    sessions = calendar.sessions_between(date(2026, 11, 23), date(2026, 11, 29))
    assert [s.day for s in sessions] == [
        date(2026, 11, 23),
        date(2026, 11, 24),
        date(2026, 11, 25),
        date(2026, 11, 27),
    ]


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        calendar.is_open(datetime(2026, 11, 24, 15))
