"""Days generated in a separate process (:mod:`its_marketsim.dayworker`): a client at speed max
gets every event of both days across a day change in order, the generation runs outside the
event loop's process, failures are reported, and no generator process outlives the simulator
(not even a SIGKILLed one)."""

from __future__ import annotations

import logging
import os
import signal
from datetime import date

import psutil  # type: ignore[import-untyped]
import pytest

from its_common.events import Quote, Trade
from its_common.simmarket.market import MarketGenerator
from its_marketsim.app import Simulator
from its_marketsim.jobprocess import JobProcessGoneError
from tests.conditions import wait_until
from tests.marketsim.support import config, open_client, recv_events
from tests.router.harness import simulator
from tests.router.harness import wait_until as sync_wait_until

FIRST, SECOND = date(2025, 11, 3), date(2025, 11, 4)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _expected(day: date) -> list[tuple[str, str]]:
    """(symbol, id) of the day's trades in emission order, generated here, in this process."""
    generator = MarketGenerator(config(), anchor=FIRST)
    data = generator.day(day)
    assert data is not None
    return [(t.sym, t.i) for t in data.table("T").build(0, len(data.trades))]


async def test_a_client_at_speed_max_gets_every_event_of_both_days_in_order() -> None:
    expected = _expected(FIRST) + _expected(SECOND)
    async with Simulator(config()) as sim:
        ws = await open_client(sim.ws_port, topics="T.*")
        got: list[tuple[str, str]] = []

        async def both_days_received() -> bool:
            got.extend(
                (e.symbol, e.trade_id) for e in await recv_events(ws, 30) if isinstance(e, Trade)
            )
            return len(got) >= len(expected)

        await wait_until(both_days_received, timeout_s=120, interval_s=0)
        await ws.close()
        assert sim.day_worker is not None and sim.day_worker.failures == 0
    # the same trades, in the same order, as this process generates from the same seed
    assert got[: len(expected)] == expected


async def test_days_are_generated_in_a_process_other_than_the_event_loops() -> None:
    async with Simulator(config()) as sim:
        worker = sim.day_worker
        assert worker is not None
        ws = await open_client(sim.ws_port, topics="T.*")

        async def next_day_prefetched() -> bool:
            await recv_events(ws, 30)
            return worker.days_generated >= 2

        await wait_until(next_day_prefetched, timeout_s=120, interval_s=0)
        await ws.close()
        pids = worker.pids()
        assert pids and os.getpid() not in pids
        assert all(psutil.Process(pid).ppid() == os.getpid() for pid in pids)
        # the days the stream streams are the ones the generator process made, cached here
        found, data = sim.generator.cached(FIRST) if sim.generator else (False, None)
        assert found and data is not None and len(data.trades) > 0


async def test_a_failure_in_the_generator_process_is_logged_counted_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Simulator(config()) as sim:
        worker = sim.day_worker
        assert worker is not None
        with (
            caplog.at_level(logging.ERROR, logger="its.marketsim.dayworker"),
            pytest.raises(RuntimeError, match="generation broke"),
        ):
            await worker.fail("generation broke")
        assert worker.failures == 1
        assert any("failed in the generator process" in r.getMessage() for r in caplog.records)


async def test_a_generator_process_that_dies_stops_the_stream_with_the_error() -> None:
    async with Simulator(config()) as sim:
        worker = sim.day_worker
        assert worker is not None and sim._task is not None
        ws = await open_client(sim.ws_port, topics="T.*")

        async def generator_started() -> bool:
            await recv_events(ws, 30)
            return bool(worker.pids())

        await wait_until(generator_started, timeout_s=60, interval_s=0)
        for pid in worker.pids():
            os.kill(pid, signal.SIGKILL)
        task = sim._task

        async def stream_ended() -> bool:
            if not task.done():
                await recv_events(ws, 30)
            return task.done()

        await wait_until(stream_ended, timeout_s=120, interval_s=0)
        assert isinstance(task.exception(), JobProcessGoneError)  # not swallowed
        assert worker.failures >= 1


async def test_no_generator_process_is_left_after_stop_even_in_the_middle_of_a_day() -> None:
    # a day big enough to be in the middle of its generation when the simulator stops
    big = config(trades_per_day={"NVDA": 3_000_000, "MSFT": 1_000_000})
    async with Simulator(big) as sim:
        worker = sim.day_worker
        assert worker is not None
        await open_client(sim.ws_port, topics="T.*")
        await wait_until(lambda: bool(worker.pids()), timeout_s=60)
        pids = worker.pids()
    assert pids
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert worker.failures == 0  # cut short by stop: not a failure
    assert not _exists(worker.folder)  # no handover file left either


async def test_a_first_quote_subscription_gets_each_owed_quote_once_in_order() -> None:
    # enough quotes that the backlog owed since the subscription is sent in several steps
    busy = config(trades_per_day={"NVDA": 150_000, "MSFT": 10_000})
    generator = MarketGenerator(busy, anchor=FIRST)
    day = generator.day(FIRST)
    assert day is not None
    quotes = day.quotes()
    nvda = quotes.sym == day.symbols.index("NVDA")
    expected = list(zip(quotes.t_ms[nvda].tolist(), quotes.seq[nvda].tolist(), strict=True))
    close = day.end_ms
    async with Simulator(busy) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        await recv_events(ws, 30)
        await ws.send('{"action":"subscribe","params":"Q.NVDA"}')
        got: list[tuple[int, int]] = []
        past_close = False

        async def day_done() -> bool:
            nonlocal past_close
            for event in await recv_events(ws, 60):
                if isinstance(event, Quote) and event.timestamp < close:
                    got.append((event.timestamp, event.sequence))
                if isinstance(event, Quote | Trade):
                    past_close = past_close or event.timestamp >= close
            return past_close

        await wait_until(day_done, timeout_s=180, interval_s=0)
        await ws.close()
    assert len(got) > 20_000  # more than one step's worth
    assert got == expected[len(expected) - len(got) :]  # each once, in order, to the close


def test_the_generator_process_ends_when_a_killed_simulator_cannot_stop_it(tmp_path) -> None:
    # SIGKILL (an OOM kill, a supervisor's last resort) gives stop() no chance: the generator
    # process must see its parent gone and end, or it lives on holding memory and the
    # simulator's stdout (a reader of that pipe would wait forever)
    with simulator(tmp_path, "--speed", "max") as sim:
        parent = psutil.Process(sim.process.pid)

        def generator() -> list[psutil.Process]:
            return [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]

        orphans = sync_wait_until(generator, 60, "the generator process started")
        orphans += [p for p in parent.children() if p not in orphans]  # its resource tracker
        sim.process.kill()
        sim.process.wait(timeout=10)
        sync_wait_until(
            lambda: not [p for p in orphans if p.is_running() and p.status() != "zombie"],
            30,
            "the generator process ended with its parent",
        )
