"""The router as a real process against the real simulator, every fault mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from its_common import streams
from its_common.clock import FEED_CLOCK_KEY
from its_common.events import MinuteAgg, Trade
from its_common.gaps import decode_gap
from its_common.localstack.servers import RedisServer
from its_common.streams import Stream
from its_router.status import decode_status
from tests.router.harness import BIN, router, router_process, simulator, wait_until


@pytest.fixture
def r(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def events(r: Any, stream: Stream) -> list[Any]:
    out: list[Any] = []
    for entry_id, fields in r.xrange(stream):
        out += streams.decode_entry(entry_id, fields).events
    return out


def entries(r: Any, stream: Stream) -> list[streams.Entry]:
    return [streams.decode_entry(i, f) for i, f in r.xrange(stream)]


SIM_DAY_START_MS = 1_762_128_000_000  # 2025-11-03 00:00 UTC, the simulator's --start
DAY_MS = 86_400_000


def feed_clock(r: Any) -> int:
    return int(r.hget(FEED_CLOCK_KEY, "event_ms"))


def gaps(r: Any) -> list[Any]:
    return [decode_gap(fields) for _, fields in r.xrange(Stream.GAPS)]


def feed_states(r: Any) -> list[str]:
    return [decode_status(fields).state for _, fields in r.xrange(Stream.FEED_STATUS)]


def test_trades_and_minute_bars_reach_the_streams(tmp_path: Path, redis_server, r) -> None:
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim) as rt:
        wait_until(lambda: r.xlen(Stream.BARS_1M) >= 2, 30, "minute bars")
        trades = events(r, Stream.TRADES)
        bars = events(r, Stream.BARS_1M)
        assert trades and all(isinstance(t, Trade) for t in trades)
        assert {t.symbol for t in trades} == {"NVDA", "MSFT"}
        assert all(isinstance(b, MinuteAgg) and b.end - b.start == 60_000 for b in bars)
        first = entries(r, Stream.TRADES)[0]
        assert first.received_ms > 0 and first.source == "ws"
        latest = r.hgetall(streams.latest_trade_key("NVDA"))
        assert float(latest[b"p"]) > 0 and int(latest[b"t"]) > 0
        assert wait_until(lambda: rt.readyz()[0] == 200, 10, "ready")
        assert rt.metric("router_events_total", type="T") >= len(trades) > 0
        assert rt.metric("router_frames_total") > 0
        assert r.xlen(Stream.DEAD_LETTER) == 0
        assert list(r.scan_iter("its:heartbeat:router:*"))


def test_drop_reconnects_resubscribes_and_publishes_the_gap(tmp_path: Path, redis_server, r):
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim) as rt:
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
        sim.drop()
        wait_until(lambda: any(g.reason == "reconnect" for g in gaps(r)), 20, "gap window")
        window = next(g for g in gaps(r) if g.reason == "reconnect")
        assert set(window.symbols) == {"NVDA", "MSFT"} and window.end_ms >= window.start_ms
        # On the feed's clock (the simulated 2025-11-03), not the wall clock: it starts at the
        # newest event before the drop and ends at the first event after it.
        assert SIM_DAY_START_MS <= window.start_ms <= window.end_ms < SIM_DAY_START_MS + DAY_MS
        assert SIM_DAY_START_MS <= feed_clock(r) < SIM_DAY_START_MS + DAY_MS
        assert rt.metric("router_reconnects_total") >= 1
        before = r.xlen(Stream.TRADES)
        wait_until(lambda: r.xlen(Stream.TRADES) > before, 20, "trades after the reconnect")
        assert feed_states(r).count("subscribed") >= 2


def test_a_killed_router_leaves_a_gap_from_its_last_written_event(tmp_path: Path, redis_server, r):
    """kill -9 loses what the router held in hand; its successor opens a gap at the stored
    feed clock and closes it at its own first event, so storage backfills the span."""
    with simulator(tmp_path) as sim:
        with router(tmp_path, redis_server.url, sim) as first:
            wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
            first.process.kill()
            first.process.wait(timeout=10)
            stored = feed_clock(r)
        with router(tmp_path, redis_server.url, sim):
            wait_until(lambda: any(g.reason == "restart" for g in gaps(r)), 30, "restart gap")
            window = next(g for g in gaps(r) if g.reason == "restart")
            assert window.start_ms == stored
            assert window.end_ms >= window.start_ms
            assert window.end_ms < SIM_DAY_START_MS + DAY_MS


def test_stall_triggers_the_watchdog(tmp_path: Path, redis_server, r) -> None:
    with (
        simulator(tmp_path) as sim,
        router(
            tmp_path, redis_server.url, sim, ITS_STALE_AFTER_S="1", ITS_WATCHDOG_ALWAYS="true"
        ) as rt,
    ):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
        sim.faults(stall=True)
        wait_until(lambda: "stale" in feed_states(r), 20, "stale state")
        assert rt.metric("router_reconnects_total", cause="stale") >= 1
        sim.faults(stall=False)
        before = r.xlen(Stream.TRADES)
        wait_until(lambda: r.xlen(Stream.TRADES) > before, 20, "trades after the stall")


def test_malformed_frames_go_to_dead_letters_and_the_router_keeps_going(
    tmp_path: Path, redis_server, r
) -> None:
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim) as rt:
        sim.faults(malformed_rate=0.3)
        wait_until(lambda: r.xlen(Stream.DEAD_LETTER) >= 20, 30, "dead letters")
        reasons = {fields[b"reason"].decode() for _, fields in r.xrange(Stream.DEAD_LETTER)}
        assert reasons & {"invalid_json", "wrong_type", "missing_field", "non_finite"}
        assert "out_of_range" in reasons or "non_finite" in reasons
        raw = next(iter(r.xrange(Stream.DEAD_LETTER)))[1][b"raw"]
        assert raw  # the raw payload is kept
        assert rt.metric("router_parse_errors_total") >= 20
        sim.faults(malformed_rate=0.0)
        before = r.xlen(Stream.TRADES)
        wait_until(lambda: r.xlen(Stream.TRADES) > before, 20, "trades keep flowing")
        assert rt.process.poll() is None
        for trade in events(r, Stream.TRADES):
            assert trade.price > 0 and trade.size >= 0


def test_duplicates_and_resent_bars_are_forwarded_for_storage_to_dedupe(
    tmp_path: Path, redis_server, r
) -> None:
    with (
        simulator(tmp_path, "--late-bar-rate", "0.5") as sim,
        router(tmp_path, redis_server.url, sim),
    ):
        sim.faults(duplicate_rate=0.2)
        wait_until(lambda: r.xlen(Stream.BARS_1M) >= 6, 40, "bars")
        trades = events(r, Stream.TRADES)
        keys = [(t.symbol, t.timestamp, t.exchange, t.trade_id) for t in trades]
        assert len(keys) > len(set(keys))  # the router does not drop them: the loader's upsert does
        bars = events(r, Stream.BARS_1M)
        starts = [(b.symbol, b.start) for b in bars]
        assert len(starts) > len(set(starts))  # re-sent bars arrive as new entries


def test_auth_failure_is_a_clear_configuration_error_without_hammering(
    tmp_path: Path, redis_server, r
) -> None:
    with (
        simulator(tmp_path) as sim,
        router(
            tmp_path,
            redis_server.url,
            sim,
            POLYGON_API_KEY="wrong-key",
            ITS_AUTH_FAILED_RETRY_S="60",
        ) as rt,
    ):
        wait_until(lambda: "auth_failed" in feed_states(r), 20, "auth_failed state")
        status, body = rt.readyz()
        assert status == 503 and "auth_failed" in body["checks"]["feed"]
        assert "rejected the API key" in rt.log() and "POLYGON_API_KEY" in rt.log()
        assert "wrong-key" not in rt.log()  # the key itself is never logged
        wait_until(lambda: rt.metric("router_reconnects_total", cause="auth_failed") == 1, 5)
        import time

        time.sleep(2)
        assert rt.metric("router_reconnects_total") == 1  # one attempt, then it waits
        assert r.hget("its:feed:state", "state") == b"auth_failed"


def test_symbol_list_changes_at_run_time(tmp_path: Path, redis_server, r) -> None:
    with (
        simulator(tmp_path, "--symbols", "NVDA,MSFT,AAPL") as sim,
        router(tmp_path, redis_server.url, sim, ITS_SYMBOLS="NVDA,MSFT"),
    ):
        wait_until(lambda: r.exists(streams.latest_trade_key("MSFT")), 20, "MSFT trades")
        assert not r.exists(streams.latest_trade_key("AAPL"))
        result = subprocess.run(
            [str(BIN / "its-router"), "set-symbols", "NVDA,AAPL"],
            env={"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        wait_until(lambda: r.exists(streams.latest_trade_key("AAPL")), 20, "AAPL trades")
        r.delete(streams.latest_trade_key("MSFT"))
        before = r.xlen(Stream.TRADES)
        wait_until(lambda: r.xlen(Stream.TRADES) > before + 5, 20, "more trades")
        assert not r.exists(streams.latest_trade_key("MSFT"))  # unsubscribed
        assert any(g.reason == "symbol_added" and g.symbols == ("AAPL",) for g in gaps(r))


def test_set_symbols_rejects_bad_input(redis_server) -> None:
    result = subprocess.run(
        [str(BIN / "its-router"), "set-symbols", "NVDA,not a ticker"],
        env={"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "expected comma-separated tickers" in result.stderr


def test_rest_fallback_end_to_end_with_the_switch_recorded(tmp_path: Path, redis_server, r):
    with simulator(tmp_path) as sim:
        with router(tmp_path, redis_server.url, sim):
            wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "ws trades")
        r.delete(Stream.BARS_1M)
        with router(
            tmp_path, redis_server.url, sim, USE_POLYGON_WS="false", ITS_REST_POLL_INTERVAL_S="0.5"
        ) as rt:
            wait_until(lambda: r.xlen(Stream.BARS_1M) >= 1, 30, "REST minute bars")
            bar_entries = entries(r, Stream.BARS_1M)
            assert all(entry.source == "rest" for entry in bar_entries)
            bars: list[Any] = [b for entry in bar_entries for b in entry.events]
            assert all(isinstance(b, MinuteAgg) and b.end - b.start == 60_000 for b in bars)
            starts = [(b.symbol, b.start) for b in bars]
            assert len(starts) == len(set(starts))  # each completed minute polled once
            # published once the events of its settle time (a second) are in
            wait_until(
                lambda: any(g.reason == "fallback_switch" for g in gaps(r)), 20, "switch gap"
            )
            assert rt.metric("router_rest_requests_total", outcome="ok") > 0
            wait_until(lambda: rt.readyz()[0] == 200, 10, "ready in REST mode")


def test_rest_fallback_backs_off_on_429_and_keeps_going(tmp_path: Path, redis_server, r) -> None:
    with (
        simulator(tmp_path, "--rest-rate-limit", "8") as sim,
        router(
            tmp_path,
            redis_server.url,
            sim,
            USE_POLYGON_WS="false",
            ITS_REST_POLL_INTERVAL_S="0.2",
            ITS_REST_REQUESTS_PER_MINUTE="600",  # more than the server allows: it answers 429
        ) as rt,
    ):
        wait_until(lambda: rt.metric("router_rest_requests_total", outcome="rate_limited"), 30)
        assert r.xlen(Stream.BARS_1M) >= 1 or r.exists(streams.latest_trade_key("NVDA"))
        assert rt.process.poll() is None
        assert "rate limited (429)" in rt.log()


def test_max_connections_is_reported_and_backed_off(tmp_path: Path, redis_server, r) -> None:
    with (
        simulator(tmp_path, "--max-connections-drop", "newest") as sim,
        router(tmp_path, redis_server.url, sim) as first,
    ):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first router streaming")
        with router(tmp_path, redis_server.url, sim, ITS_MAX_CONNECTIONS_BACKOFF_S="60") as second:
            wait_until(lambda: "max_connections" in feed_states(r), 20, "max_connections state")
            wait_until(
                lambda: second.metric("router_reconnects_total", cause="max_connections") == 1, 10
            )
            assert "another client uses this API key" in second.log()
            status, _ = second.readyz()
            assert status == 503
        assert first.metric("router_last_message_timestamp_seconds") > 0
        before = r.xlen(Stream.TRADES)
        wait_until(lambda: r.xlen(Stream.TRADES) > before, 20, "the first router keeps streaming")


def test_a_status_among_the_market_data_is_acted_on(tmp_path: Path, redis_server, r) -> None:
    """Every frame read is checked for statuses (``feed.may_hold_status``): a streaming router
    sent ``max_connections`` (another client took its place) reports it and backs off."""
    with (
        simulator(tmp_path, "--max-connections-drop", "oldest") as sim,
        router(tmp_path, redis_server.url, sim, ITS_MAX_CONNECTIONS_BACKOFF_S="60") as first,
    ):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first router streaming")
        with router(tmp_path, redis_server.url, sim) as second:
            wait_until(
                lambda: first.metric("router_reconnects_total", cause="max_connections") == 1, 20
            )
            assert "another client uses this API key" in first.log()
            assert second.metric("router_reconnects_total", cause="max_connections") == 0


def test_each_feed_status_is_counted_once(tmp_path: Path, redis_server, r) -> None:
    """The subscription acks (one ``success`` status per topic) arrive on the read loop, which
    counts them; the writer, which decodes the same frames, counted them a second time."""
    r.delete("its:config:symbols")
    with (
        simulator(tmp_path) as sim,
        router(tmp_path, redis_server.url, sim, ITS_SYMBOLS="NVDA") as rt,
    ):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "trades after the acks")
        assert rt.metric("router_feed_status_total", status="success") == 2  # T.NVDA, AM.NVDA
        assert rt.metric("router_feed_status_total", status="auth_success") == 1


def test_a_dead_writer_ends_the_router_with_a_non_zero_exit(tmp_path: Path, redis_server, r):
    """Crash-only: the writer task raising must not leave a router that reads and writes nothing
    while its probes stay green; the process ends non-zero so it gets restarted."""
    command = [sys.executable, "-m", "tests.router.faulty_writer_router"]
    with (
        simulator(tmp_path) as sim,
        router_process(tmp_path, redis_server.url, sim, command, {}) as rt,
    ):
        wait_until(lambda: rt.process.poll() is not None, 60, "router exit after writer fault")
        assert rt.process.returncode != 0
        log = rt.log()
        assert "injected writer fault" in log
        assert "essential task 'writer'" in log
        assert r.xlen(Stream.TRADES) > 0  # it did write before the fault


def test_a_lost_connection_is_published_as_disconnected_until_subscribed_again(
    tmp_path: Path, redis_server, r
) -> None:
    """While the router cannot reach the feed, ``its:feed:state`` must not keep saying
    ``subscribed``: the alerter's feed_disconnected rule reads it."""
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
        sim.faults(refuse_connections_s=3)
        sim.drop()
        wait_until(lambda: r.hget("its:feed:state", "state") == b"disconnected", 20, "disconnected")
        wait_until(lambda: r.hget("its:feed:state", "state") == b"subscribed", 30, "subscribed")
        assert "disconnected" in feed_states(r)


def test_a_frozen_router_dropped_as_a_slow_reader_reconnects(
    tmp_path: Path, redis_server, r
) -> None:
    """The router stops reading (SIGSTOP) long enough for its watchdog to see silence, the
    simulator closes it as a slow reader (1011); once continued it must reconnect and go on
    (the chaos suite found it silent for good after this, connected to nothing)."""
    with (
        simulator(tmp_path) as sim,
        router(
            tmp_path, redis_server.url, sim, ITS_STALE_AFTER_S="2", ITS_WATCHDOG_ALWAYS="true"
        ) as rt,
    ):
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
        os.kill(rt.process.pid, signal.SIGSTOP)
        try:
            time.sleep(3)  # the fault lasts this long; nothing is awaited
            sim.drop(1011)
        finally:
            os.kill(rt.process.pid, signal.SIGCONT)
        resumed = feed_clock(r)
        wait_until(lambda: feed_clock(r) > resumed + 60_000, 30, "the feed a minute on")
        assert rt.process.poll() is None
        # Published as its own state: the alerter's feed_overflow rule reads it.
        assert "slow_consumer" in feed_states(r)


def test_subscribe_all_stores_trades_and_bars_of_unlisted_symbols(
    tmp_path: Path, redis_server, r
) -> None:
    """Whole-market mode: ``ITS_SUBSCRIBE_ALL`` subscribes ``T.*``/``AM.*``; trades and bars
    of tickers outside the symbol list reach the streams, the list's own ones too."""
    whole = ("--whole-market-symbols", "300", "--whole-market-rate", "20")
    with (
        simulator(tmp_path, *whole) as sim,
        router(tmp_path, redis_server.url, sim, ITS_SUBSCRIBE_ALL="true") as rt,
    ):
        listed = {"NVDA", "MSFT"}

        def unlisted_bars() -> bool:
            return any(b.symbol not in listed for b in events(r, Stream.BARS_1M))

        wait_until(unlisted_bars, 60, "minute bars of unlisted symbols")
        symbols = {t.symbol for t in events(r, Stream.TRADES)}
        assert len(symbols - listed) >= 20
        assert listed & symbols
        assert "subscribed" in feed_states(r)
        assert '"T.*"' in rt.log() and '"AM.*"' in rt.log()
        # the latest-trade hash is kept for the list only, not for thousands of tickers
        unlisted = next(iter(symbols - listed))
        assert r.exists(streams.latest_trade_key(next(iter(listed & symbols))))
        assert not r.exists(streams.latest_trade_key(unlisted))
