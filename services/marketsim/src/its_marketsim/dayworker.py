"""Days generated in a separate process, so the stream's event loop never waits for one.

Generating a day (and its quotes) takes seconds of numpy and Python work; in a thread of the
simulator's process it held the GIL long enough to pause the stream at day changes (0.6-14 s
measured at ``--speed max``). Here one long-lived generator process
(:mod:`its_marketsim.jobprocess`) owns its own :class:`MarketGenerator` with the same
config and anchor day, so it produces the same values (every draw is keyed by seed, day and
symbol). A day comes back with the tables asked for, its arrays mapped from files rather than
copied (:mod:`its_marketsim.handover`), and is adopted into the parent's generator cache, so REST
and the stream read one object per day. A day's quotes, when first needed after the day arrived,
are built in the generator process as well (from the NBBO it keeps for its last two days).

Failures in the generator process are logged, counted (:attr:`DayWorker.failures`) and raised
to whoever waits for the day; :meth:`DayWorker.stop` ends the process (no orphan is left).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import EVENT_TYPES, DayData, QuoteColumns
from its_common.simmarket.market import MarketGenerator
from its_marketsim import handover
from its_marketsim.jobprocess import JobProcess

log = logging.getLogger("its.marketsim.dayworker")
T = TypeVar("T")
# days the generator process keeps after handing them over: none (the parent caches them);
# it keeps the quote makers (the NBBO) of the last few, so a first quote subscription of the
# current day does not regenerate it
WORKER_CACHE_DAYS = 0
QUOTE_MAKER_DAYS = 2

_generator: MarketGenerator | None = None  # in the generator process only
_folder = ""
_quote_makers: dict[date, Callable[[], QuoteColumns]] = {}


def _start(config: SimConfig, anchor: date, folder: str) -> None:
    global _generator, _folder
    _generator = MarketGenerator(config, anchor=anchor, cache_days=WORKER_CACHE_DAYS)
    _folder = folder


def _day(day: date, kinds: frozenset[str]) -> bytes:
    """In the generator process: the day with the tables of ``kinds`` built (handed over)."""
    assert _generator is not None
    data = _generator.day(day)
    if data is not None:
        for kind in EVENT_TYPES:
            if kind in kinds:
                data.table(kind)
        if data.quote_factory is not None:
            _quote_makers[day] = data.quote_factory
            while len(_quote_makers) > QUOTE_MAKER_DAYS:
                _quote_makers.pop(next(iter(_quote_makers)))
    return handover.dumps(data, _folder)


def _quotes(day: date) -> bytes:
    """In the generator process: the day's quotes (handed over)."""
    assert _generator is not None
    maker = _quote_makers.get(day)
    if maker is None:
        data = _generator.day(day)
        assert data is not None, f"no trading on {day}"
        return handover.dumps(data.quotes(), _folder)
    return handover.dumps(maker(), _folder)


def _quotes_from(maker: bytes) -> bytes:
    """In a generator process: quotes made from a day's NBBO (handed over both ways)."""
    assert _generator is not None
    return handover.dumps(_generator.make_quotes(handover.loads(maker)), _folder)


def _fail(message: str) -> None:
    """In the generator process: raise (the tests' way to make a generation fail)."""
    raise RuntimeError(message)


class DayWorker:
    """The generator process and the days it hands back (see the module docstring)."""

    def __init__(self, generator: MarketGenerator) -> None:
        self.generator = generator
        self.failures = 0
        self.days_generated = 0
        self._stopping = False
        self._failures_lock = threading.Lock()
        self._pending: dict[date, asyncio.Future[DayData | None]] = {}
        self.folder = handover.folder()
        self._generator_process = self._new_process("marketsim-generator")
        # a second process for quotes asked for while the first generates a day (the first
        # keeps the NBBO of its last days, but a day's generation is not interrupted)
        self._quotes_process: JobProcess | None = None
        self._quotes_lock = threading.Lock()

    def _new_process(self, name: str) -> JobProcess:
        return JobProcess(name, _start, (self.generator.config, self.generator.anchor, self.folder))

    def _processes(self) -> list[JobProcess]:
        return [self._generator_process] + ([self._quotes_process] if self._quotes_process else [])

    def pids(self) -> list[int]:
        """Process ids of the generator processes (none before their first job or after stop)."""
        return [p.pid for p in self._processes() if p.pid is not None]

    async def day(self, day: date, kinds: frozenset[str] = frozenset({"T"})) -> DayData | None:
        """The day, from the parent's cache or generated in the generator process (a day asked
        for again while it is generated waits for the same generation)."""
        found, data = self.generator.cached(day)
        if found:
            return data
        pending = self._pending.get(day)
        if pending is None:
            pending = asyncio.ensure_future(self._generate(day, kinds))
            self._pending[day] = pending
            pending.add_done_callback(lambda done: self._settled(day, done))
        return await asyncio.shield(pending)

    def _settled(self, day: date, done: asyncio.Future[DayData | None]) -> None:
        self._pending.pop(day, None)
        if not done.cancelled():
            done.exception()  # retrieved here: logged and counted in _run, raised to waiters

    async def _generate(self, day: date, kinds: frozenset[str]) -> DayData | None:
        job = asyncio.wrap_future(self._generator_process.submit(_day, day, kinds))
        payload = await self._run(job, f"day {day}")
        data: DayData | None = await asyncio.to_thread(handover.loads, payload)
        self.days_generated += 1
        wants_quotes = self.generator.config.quotes_per_trade > 0
        if data is not None and wants_quotes and not data.quotes_built():
            data.quote_factory = self._quote_factory(day, data.quote_maker)
        return self.generator.adopt(day, data)

    def _quote_factory(self, day: date, maker: object) -> Callable[[], QuoteColumns]:
        def quotes() -> QuoteColumns:  # called in a thread (DayData.table("Q")), never the loop
            try:
                quotes: QuoteColumns = handover.loads(self._quotes_job(day, maker).result())
                return quotes
            except BaseException:
                self._failed(f"quotes of {day}")
                raise

        return quotes

    def _quotes_job(self, day: date, maker: object) -> concurrent.futures.Future[bytes]:
        """Quotes from the generator process when it is idle (it has the day's NBBO), else from
        the second process, given the NBBO that came with the day (no day generated again)."""
        if not self._pending or maker is None:
            return self._generator_process.submit(_quotes, day)
        payload = handover.dumps(maker, self.folder)
        with self._quotes_lock:
            if self._stopping:
                raise RuntimeError("the simulator is stopping")
            if self._quotes_process is None:
                self._quotes_process = self._new_process("marketsim-quotes")
            return self._quotes_process.submit(_quotes_from, payload)

    async def fail(self, message: str) -> None:
        """Run a job that raises in the generator process (for tests of the error path)."""
        await self._run(
            asyncio.wrap_future(self._generator_process.submit(_fail, message)), "a failing job"
        )

    async def _run(self, job: asyncio.Future[T], what: str) -> T:
        try:
            return await job
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._failed(what)
            raise

    def _failed(self, what: str) -> None:
        if self._stopping:  # a job cut short by stop(): not a failure
            return
        with self._failures_lock:
            self.failures += 1
        log.exception("generating %s failed in the generator process", what)

    def stop(self) -> None:
        """End the generator processes, even in the middle of a day (blocking: call it off the
        event loop)."""
        with self._quotes_lock:
            self._stopping = True
            processes = self._processes()
        for process in processes:
            process.stop()
        handover.remove(self.folder)
