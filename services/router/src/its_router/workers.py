"""Write workers: the router's parsing, validation and writing across processes.

One feed connection (Polygon allows one per key) is read by the router's main process, which
only stamps frames and queues them (:mod:`its_router.feed`). With ``ITS_ROUTER_WORKERS`` = N > 1
a dispatcher hands the raw frames to N worker processes, each running the one
:class:`~its_router.writer.StreamWriter` (decode, validate, batch, dead-letter, XADD, gap
windows) on its own Redis connection. Which worker gets a frame:

- a frame that may hold aggregates (its bytes contain ``"AM"`` or ``"A"``) goes to worker 0, so
  every bar stays in receive order on its stream: a re-sent minute bar is written after the
  version it corrects, exactly as with one process (over-inclusive is harmless: a trade frame of
  symbol ``A`` goes there too);
- every other frame (trades, quotes) goes round-robin to the next worker. Trade and quote entries
  are then in receive order per worker, not across workers: storage deduplicates trades exactly
  (symbol, exchange, id, time), and nothing downstream relies on the order of entries.

Around that, what one process guarantees still holds: the feed clock and the latest-trade hashes
only move forward within a run (:data:`its_common.clock.ADVANCE_HASH_LUA`); a gap (reconnect,
queue overflow) starts at the newest event the worker of the next frame has seen, which is no
later than the newest event of the whole feed, so the window covers the true one (each worker
starts from the stored feed clock); the restart gap of the next router process starts at the
oldest worker clock (:data:`its_common.clock.WORKER_CLOCK_KEY`); dead letters and feed statuses
are written by the worker that decoded them. A worker that ends while the router should run ends
the router (crash-only); a clean stop drains every worker first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Histogram

from its_common.gaps import GapWindow
from its_common.logs import setup_logging
from its_common.streams import StreamLayout, connect
from its_router.batching import Frame
from its_router.metrics import RouterMetrics
from its_router.status import StatusPublisher
from its_router.writer import GAP_SETTLE_S, StreamWriter, WorkerIdentity

log = logging.getLogger("its.router.workers")
STATS_INTERVAL_S = 0.25
WORKER_QUEUE_FRAMES = 256
AGGREGATE_MARKS = (b'"AM"', b'"A"')
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    run: str
    redis_url: str  # with the password: handed over a pipe, never logged
    batch_max_events: int
    hold_max_events: int
    feed_clock_ms: int | None
    stream_shards: int = 1
    log_level: str = "INFO"
    latest_for_listed_only: bool = False  # whole-market mode: the symbol list's hashes only
    redis_cluster: bool = False  # ITS_REDIS_CLUSTER: redis_url is a node of a Redis Cluster


def is_aggregate_frame(payload: bytes) -> bool:
    return any(mark in payload for mark in AGGREGATE_MARKS)


# -- the worker process ---------------------------------------------------------------------


def worker_process(config: WorkerConfig, inbox: Connection, outbox: Connection) -> None:
    """Entry point of a worker process (spawned)."""
    setup_logging(f"router-worker-{config.index}", config.log_level)
    # Signals are the main process's: it stops the workers in order (each drains what it holds);
    # when the main process is gone, its end of the pipe closes and the worker drains and ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_serve(config, inbox, outbox))


async def _serve(config: WorkerConfig, inbox: Connection, outbox: Connection) -> None:
    redis = connect(config.redis_url, cluster=config.redis_cluster)
    recorder = MetricsRecorder()
    symbols: list[tuple[str, ...]] = [()]
    written_bytes = [0]

    def count_bytes(size: int) -> None:
        written_bytes[0] += size

    writer = StreamWriter(
        redis,
        recorder.metrics,
        batch_max_events=config.batch_max_events,
        hold_max_events=config.hold_max_events,
        symbols=lambda: list(symbols[0]),
        publish_gap=StatusPublisher(redis).publish_gap,
        on_written=count_bytes,
        worker=WorkerIdentity(config.index, config.run),
        layout=StreamLayout(config.stream_shards),
        latest_for_listed_only=config.latest_for_listed_only,
        gap_settle_s=GAP_SETTLE_S,
    )
    writer.seen_event_ms = config.feed_clock_ms
    queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=WORKER_QUEUE_FRAMES)
    stop = asyncio.Event()

    async def receive() -> None:
        try:
            while True:
                message = await off_loop(inbox.recv)
                kind = message[0]
                for control in message[1]:  # before the frames that came after them
                    if control[0] == "gap":
                        writer.record_gap(control[1])
                    else:  # "open_gap"
                        writer.open_gap(control[1], control[2], since_ms=control[3])
                if kind == "stop":
                    return
                if message[3] is not None:
                    symbols[0] = message[3]
                for frame in message[2]:
                    await queue.put(frame)  # bounded: the main process waits for us
        except (EOFError, OSError):
            log.error("the router's main process is gone: draining and stopping")
        finally:
            stop.set()

    def report() -> None:
        stats = recorder.drain()
        stats.update(
            seen_event_ms=writer.seen_event_ms,
            written_events=writer.written_events,
            held_events=writer.held_events,
            written_bytes=written_bytes[0],
        )
        written_bytes[0] = 0
        outbox.send(("stats", stats))

    async def reporter() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)
            report()

    receiver = asyncio.create_task(receive(), name="worker-receive")
    reporting = asyncio.create_task(reporter(), name="worker-report")
    try:
        await writer.run(queue, stop)
    finally:
        stop.set()
        receiver.cancel()
        await asyncio.gather(receiver, reporting, return_exceptions=True)
        report()
        outbox.send(("stopped", None))
        await redis.aclose()


# -- metrics across the process boundary ----------------------------------------------------


class _Recorded:
    """Stands in for a prometheus metric in a worker: records what the writer does to it."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}
        self.values: list[float] = []
        self.value: float | None = None
        self._labels: tuple[str, ...] = ()

    def labels(self, *values: str) -> _Recorded:
        child = _Recorded()
        child.counts = self.counts
        child._labels = values
        return child

    def inc(self, amount: float = 1) -> None:
        self.counts[self._labels] = self.counts.get(self._labels, 0) + amount

    def observe(self, value: float) -> None:
        self.values.append(value)

    def set(self, value: float) -> None:
        self.value = value


class MetricsRecorder:
    """A :class:`RouterMetrics` whose metrics record; ``drain()`` gives what happened since."""

    def __init__(self) -> None:
        self.recorded = {name: _Recorded() for name in RouterMetrics.__dataclass_fields__}
        self.metrics = RouterMetrics(**cast(dict[str, Any], self.recorded))

    def drain(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, metric in self.recorded.items():
            if metric.counts or metric.values:
                out[name] = (dict(metric.counts), list(metric.values))
                metric.counts.clear()
                metric.values.clear()
        return out


def apply_stats(metrics: RouterMetrics, stats: dict[str, Any]) -> None:
    """Add what a worker recorded to the router's own metrics (the ones /metrics shows)."""
    for name, recorded in stats.items():
        target = getattr(metrics, name, None)
        if not isinstance(recorded, tuple) or target is None:
            continue
        counts, values = recorded
        for labels, amount in counts.items():
            metric = target.labels(*labels) if labels else target
            cast(Counter, metric).inc(amount)
        for value in values:
            cast(Histogram, target).observe(value)


# -- the main process's side ----------------------------------------------------------------


@dataclass
class _Worker:
    config: WorkerConfig
    process: BaseProcess
    inbox: Connection  # ours: send to the worker
    outbox: Connection  # ours: receive from the worker
    sent_symbols: tuple[str, ...] | None = None
    # Gap messages for the worker, sent with its next frames (one writer per pipe: a message
    # written by another thread meanwhile would interleave with a large one).
    controls: list[tuple[Any, ...]] = field(default_factory=list)
    sending: asyncio.Future[None] | None = None
    seen_event_ms: int | None = None
    written_events: int = 0
    held_events: int = 0
    stopped: bool = False


@dataclass
class WorkerPool:
    """N write workers fed by one dispatcher; stats flow back into the router's metrics."""

    configs: list[WorkerConfig]
    metrics: RouterMetrics
    symbols: Callable[[], list[str]]
    on_written: Callable[[int], None] | None = None
    workers: list[_Worker] = field(default_factory=list)
    all_stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    @staticmethod
    def new_run() -> str:
        return uuid.uuid4().hex[:12]

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for config in self.configs:
            ours_in, theirs_in = context.Pipe(duplex=False)
            theirs_out, ours_out = context.Pipe(duplex=False)
            process = context.Process(
                target=worker_process,
                args=(config, ours_in, ours_out),
                name=f"its-router-worker-{config.index}",
                daemon=True,
            )
            process.start()
            ours_in.close()
            ours_out.close()
            self.workers.append(_Worker(config, process, theirs_in, theirs_out))
        log.info("%d write workers started", len(self.workers))

    @property
    def feed_clock_ms(self) -> int | None:
        seen = [w.seen_event_ms for w in self.workers if w.seen_event_ms is not None]
        return max(seen) if seen else None

    @property
    def written_events(self) -> int:
        return sum(w.written_events for w in self.workers)

    @property
    def held_events(self) -> int:
        return sum(w.held_events for w in self.workers)

    def record_gap(self, window: GapWindow) -> None:
        """A gap window to publish (worker 0 publishes it with its next write)."""
        self.workers[0].controls.append(("gap", window))

    def open_gap(self, symbols: tuple[str, ...], reason: str, since_ms: int | None) -> None:
        """A gap from ``since_ms`` closed by worker 0's next events (the restart gap)."""
        self.workers[0].controls.append(("open_gap", symbols, reason, since_ms))

    def route(self, frames: list[Frame]) -> list[list[Frame]]:
        chunks: list[list[Frame]] = [[] for _ in self.workers]
        count = len(self.workers)
        for frame in frames:
            if is_aggregate_frame(frame.payload):
                chunks[0].append(frame)
            else:
                chunks[self._next].append(frame)
                self._next = (self._next + 1) % count
        return chunks

    async def dispatch(self, queue: asyncio.Queue[Frame], stopping: asyncio.Event) -> None:
        """Hand queued frames to the workers until ``stopping`` and the queue is empty; then stop
        the workers (each drains and flushes what it holds) and wait for them."""
        try:
            while not (stopping.is_set() and queue.empty()):
                frames = await _take(queue)
                self.metrics.queue_depth.set(queue.qsize())
                if not frames:
                    continue
                symbols = tuple(self.symbols())
                sends = []
                for worker, chunk in zip(self.workers, self.route(frames), strict=True):
                    if not chunk:
                        continue
                    changed = symbols if symbols != worker.sent_symbols else None
                    worker.sent_symbols = symbols
                    message = ("frames", worker.controls, chunk, changed)
                    worker.controls = []
                    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
                    worker.sending = off_loop(worker.inbox.send_bytes, data)
                    sends.append(worker.sending)
                await asyncio.gather(*sends)
        finally:
            for worker in self.workers:
                if worker.sending is not None and not worker.sending.done():
                    continue  # cancelled mid-send (a crash): the worker sees EOF when we end
                with contextlib.suppress(OSError):
                    worker.inbox.send(("stop", worker.controls))

    async def collect(self, worker: _Worker) -> None:
        """Apply a worker's stats until it stops; a worker that dies ends the router."""
        while True:
            try:
                kind, stats = await off_loop(worker.outbox.recv)
            except (EOFError, OSError):
                await off_loop(worker.process.join, 5)
                raise RuntimeError(
                    f"write worker {worker.config.index} ended (exit code "
                    f"{worker.process.exitcode})"
                ) from None
            if kind == "stopped":
                worker.stopped = True
                if all(w.stopped for w in self.workers):
                    self.all_stopped.set()
                await off_loop(worker.process.join, 10)
                return
            apply_stats(self.metrics, stats)
            worker.written_events = stats["written_events"]
            worker.held_events = stats["held_events"]
            if stats["seen_event_ms"] is not None:
                worker.seen_event_ms = max(worker.seen_event_ms or 0, stats["seen_event_ms"])
            if self.on_written is not None and stats["written_bytes"]:
                self.on_written(stats["written_bytes"])
            self.metrics.held_events.set(self.held_events)

    def terminate(self) -> None:
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()


async def _take(queue: asyncio.Queue[Frame], max_frames: int = 2_000) -> list[Frame]:
    frames: list[Frame] = []
    if queue.empty():
        with contextlib.suppress(TimeoutError):
            frames.append(await asyncio.wait_for(queue.get(), 0.2))
    while not queue.empty() and len(frames) < max_frames:
        frames.append(queue.get_nowait())
    return frames


def off_loop(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` on a daemon thread (a blocking pipe read or write): unlike the default
    executor's threads, one still blocked never holds up the interpreter's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, which raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, daemon=True, name=getattr(fn, "__name__", "off-loop")).start()
    return future
