"""The router with write workers (ITS_ROUTER_WORKERS > 1): real processes, real simulator."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from its_common.clock import FEED_CLOCK_KEY, WORKER_CLOCK_KEY
from its_common.events import MinuteAgg, Trade, encode_frame
from its_common.localstack.servers import RedisServer
from its_common.streams import Stream, latest_trade_key
from its_router.batching import Frame
from its_router.metrics import RouterMetrics
from its_router.workers import MetricsRecorder, WorkerPool, apply_stats, is_aggregate_frame
from tests.router.harness import BIN, router, simulator, wait_until
from tests.router.test_against_simulator import events, feed_clock, gaps

WORKERS = {"ITS_ROUTER_WORKERS": "2"}
SIM_DAY_START_MS = 1_762_128_000_000
DAY_MS = 86_400_000


@pytest.fixture
def r(redis_server: RedisServer) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(part) for part in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_frames_with_aggregates_go_to_worker_zero_the_rest_round_robin() -> None:
    bar = MinuteAgg("NVDA", 10, 1.0, 1.0, 1.0, 1.0, 0, 60_000)
    trades = [encode_frame([Trade(s, 4, "1", 3, 1.0, 1, 1, 1)]) for s in ("NVDA", "MSFT", "A")]
    mixed = encode_frame([Trade("NVDA", 4, "2", 3, 1.0, 1, 2, 2), bar])
    assert [is_aggregate_frame(f) for f in (*trades, mixed)] == [False, False, True, True]
    pool = WorkerPool([], RouterMetrics.create(CollectorRegistry()), symbols=list)
    pool.workers = [Any, Any, Any]  # type: ignore[list-item]  # route() only counts them
    frames = [Frame(i, p) for i, p in enumerate([trades[0], mixed, trades[1], trades[0], mixed])]
    chunks = pool.route(frames)
    assert [[f.received_ms for f in chunk] for chunk in chunks] == [[0, 1, 4], [2], [3]]


def test_worker_metrics_reach_the_router_registry() -> None:
    recorder = MetricsRecorder()
    recorder.metrics.events.labels("T").inc(500)
    recorder.metrics.parse_errors.labels("invalid_json").inc()
    recorder.metrics.receive_to_stored.observe(0.004)
    registry = CollectorRegistry()
    apply_stats(RouterMetrics.create(registry), recorder.drain())
    assert registry.get_sample_value("router_events_total", {"type": "T"}) == 500
    assert registry.get_sample_value("router_parse_errors_total", {"reason": "invalid_json"}) == 1
    assert registry.get_sample_value("router_receive_to_stored_seconds_count") == 1
    assert recorder.drain() == {}  # drained: nothing counted twice


def test_two_workers_write_trades_bars_and_dead_letters(tmp_path: Path, redis_server, r) -> None:
    with (
        simulator(tmp_path, "--late-bar-rate", "0.5") as sim,
        router(tmp_path, redis_server.url, sim, **WORKERS) as rt,
    ):
        pids = wait_until(lambda: children(rt.process.pid)[1:] and children(rt.process.pid), 30)
        wait_until(lambda: r.xlen(Stream.BARS_1M) >= 3, 40, "minute bars")
        sim.faults(malformed_rate=0.3)
        wait_until(lambda: r.xlen(Stream.DEAD_LETTER) >= 5, 30, "dead letters")
        sim.faults(malformed_rate=0.0)
        trades = events(r, Stream.TRADES)
        assert {t.symbol for t in trades} == {"NVDA", "MSFT"}
        dead_letters = r.xlen(Stream.DEAD_LETTER)
        # each worker reports its counts every STATS_INTERVAL_S: every event written so far,
        # and every dead letter, is counted once the reports after it have arrived
        wait_until(lambda: rt.metric("router_events_total", type="T") >= len(trades), 10, "metric")
        wait_until(
            lambda: rt.metric("router_parse_errors_total") >= dead_letters, 10, "parse errors"
        )
        latest = r.hgetall(latest_trade_key("NVDA"))
        assert int(latest[b"t"]) == max(t.timestamp for t in trades if t.symbol == "NVDA") or (
            int(latest[b"t"]) > max(t.timestamp for t in trades if t.symbol == "NVDA") - 60_000
        )
        marks = {k.decode(): int(v) for k, v in r.hgetall(WORKER_CLOCK_KEY).items()}
        clocks = {k: v for k, v in marks.items() if k.startswith("w")}  # not gap<i> (unpublished)
        assert set(clocks) == {"w0", "w1"}
        assert max(clocks.values()) <= feed_clock(r)
        rt.process.send_signal(signal.SIGTERM)
        assert rt.process.wait(timeout=30) == 0, rt.log()
        wait_until(lambda: not any(alive(pid) for pid in pids), 20, "workers ended")
        # every written event is counted once: the stream holds what the metric said
        stored = len(events(r, Stream.TRADES))
        assert stored >= len(trades)


def test_a_killed_router_with_workers_leaves_a_gap_from_its_oldest_worker(
    tmp_path: Path, redis_server, r
) -> None:
    with simulator(tmp_path) as sim:
        with router(tmp_path, redis_server.url, sim, **WORKERS) as first:
            wait_until(lambda: len(r.hgetall(WORKER_CLOCK_KEY)) == 2, 30, "both workers wrote")
            pids = children(first.process.pid)
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
            # the workers see the main process gone, drain what they hold and end
            wait_until(lambda: not any(alive(pid) for pid in pids), 30, "workers ended")
            oldest = min(int(v) for v in r.hgetall(WORKER_CLOCK_KEY).values())
            assert oldest <= feed_clock(r)
        with router(tmp_path, redis_server.url, sim, **WORKERS):
            wait_until(lambda: any(g.reason == "restart" for g in gaps(r)), 30, "restart gap")
            window = next(g for g in gaps(r) if g.reason == "restart")
            assert window.start_ms == oldest
            assert SIM_DAY_START_MS <= window.start_ms <= window.end_ms < SIM_DAY_START_MS + DAY_MS


def test_a_reconnect_gap_with_workers_covers_the_drop(tmp_path: Path, redis_server, r) -> None:
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim, **WORKERS) as rt:
        wait_until(lambda: r.xlen(Stream.TRADES) > 0, 20, "first trades")
        sim.drop()
        wait_until(lambda: any(g.reason == "reconnect" for g in gaps(r)), 20, "gap window")
        window = next(g for g in gaps(r) if g.reason == "reconnect")
        assert set(window.symbols) == {"NVDA", "MSFT"}
        assert SIM_DAY_START_MS <= window.start_ms <= window.end_ms < SIM_DAY_START_MS + DAY_MS
        assert rt.metric("router_reconnects_total") >= 1
        assert r.hget(FEED_CLOCK_KEY, "run")  # written through the forward-only script


def test_a_symbol_added_with_workers_is_published_as_a_gap(tmp_path: Path, redis_server, r):
    with (
        simulator(tmp_path, "--symbols", "NVDA,MSFT,AAPL") as sim,
        router(tmp_path, redis_server.url, sim, ITS_SYMBOLS="NVDA,MSFT", **WORKERS),
    ):
        wait_until(lambda: r.exists(latest_trade_key("MSFT")), 20, "MSFT trades")
        set_symbols = [str(BIN / "its-router"), "set-symbols", "NVDA,AAPL"]
        env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
        assert subprocess.run(set_symbols, env=env, timeout=30, check=False).returncode == 0
        wait_until(lambda: r.exists(latest_trade_key("AAPL")), 20, "AAPL trades")
        wait_until(
            lambda: any(g.reason == "symbol_added" and g.symbols == ("AAPL",) for g in gaps(r)),
            20,
            "symbol_added gap",
        )
