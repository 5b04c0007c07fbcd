"""The wait between HTTP retries (Slack, REST clients): a numeric Retry-After, else the Backoff."""

from __future__ import annotations

from its_common.backoff import retry_after_s as _retry_after


def test_retry_after_seconds_are_used_and_an_http_date_falls_back_to_backoff() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after("-1") == 0.0
    # An HTTP date used to raise ValueError out of send(); now the Backoff schedule applies.
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _retry_after(None) is None and _retry_after("") is None
