"""The write side: drain the read queue, batch, and write to Redis Streams in one pipeline.

The read loop never waits for this: it only enqueues frames. When Redis is unreachable, batches
are held in memory (bounded by events) and retried with backoff while the queue keeps being
drained; when the bound is reached the oldest batch is dropped, counted, logged and recorded as a
gap window that is published (for REST backfill) once Redis is back. Nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from redis.exceptions import RedisError

from its_common.backoff import Backoff
from its_common.clock import ADVANCE_HASH_LUA, FEED_CLOCK_KEY, WORKER_CLOCK_KEY, feed_clock_mapping
from its_common.events import Trade, encode_frame
from its_common.gaps import GapWindow
from its_common.rediscluster import is_cluster
from its_common.streams import (
    DEFAULT_TRIM,
    STREAM_FOR_EVENT,
    Stream,
    StreamLayout,
    encode_entry_raw,
    latest_trade_key,
    now_ms,
)
from its_common.telemetry import current_traceparent
from its_router.batching import Batch, Frame, build_batch, frame_events
from its_router.metrics import RouterMetrics

log = logging.getLogger("its.router.writer")
tracer = trace.get_tracer("its.router")
MAX_DEAD_LETTER_BYTES = 64 * 1024
MAX_SPAN_SYMBOLS = 50
# How much older than the feed's clock an event sent now can be: trades are reported up to
# 15 minutes late (and the corrected bars re-sent with them), plus a margin.
LATE_REPORT_HORIZON_MS = 20 * 60_000
# The first events after a gap may be late reports only; the current ones follow within this.
GAP_SETTLE_S = 1.0


class StreamWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: RouterMetrics,
        *,
        batch_max_events: int,
        hold_max_events: int,
        max_events_per_entry: int = 2_000,
        symbols: Callable[[], list[str]] = list,
        publish_gap: Callable[[GapWindow], Any] | None = None,
        backoff: Backoff | None = None,
        on_written: Callable[[int], None] | None = None,
        latest_for_listed_only: bool = False,
        worker: WorkerIdentity | None = None,
        layout: StreamLayout | None = None,
        late_report_horizon_ms: int = LATE_REPORT_HORIZON_MS,
        gap_settle_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``latest_for_listed_only``: keep the latest-trade hash only for the symbol list (the
        whole market's thousands of tickers would cost a write each per batch, for no reader)."""
        self.redis = redis
        self.latest_for_listed_only = latest_for_listed_only
        self.metrics = metrics
        self.batch_max_events = batch_max_events
        self.hold_max_events = hold_max_events
        self.max_events_per_entry = max_events_per_entry
        self.symbols = symbols
        self.publish_gap = publish_gap
        self.backoff = backoff or Backoff(0.2, 5.0)
        self.on_written = on_written  # bytes of stream entries written (the trimmer's nudge)
        self.late_report_horizon_ms = late_report_horizon_ms
        # How long after the first events past a gap the gap's end may still grow (the router
        # uses GAP_SETTLE_S; 0 closes it at the first batch, for tests of one batch).
        self.gap_settle_s = gap_settle_s
        self.monotonic = monotonic
        self.held: deque[Batch] = deque()
        self._gap_mark: int | None = None  # the unpublished gaps' start as stored in Redis
        self.held_events = 0
        self.pending_gaps: list[GapWindow] = []
        # Gaps whose end is not known yet: they close at the first event time after them.
        self.open_gaps: list[OpenGap] = []
        # Feed clock: the newest event time seen (held) and written (its_common.clock).
        self.seen_event_ms: int | None = None
        self.written_event_ms: int | None = None
        self.retry_at = 0.0
        self.redis_ok = True
        self.written_events = 0
        # One of several write workers (its_router.workers): the feed clock and the latest
        # trades are advanced only forward within the run (the workers write out of order), and
        # this worker's own clock is kept for the restart gap of the next router process.
        self.worker = worker
        self.layout = layout or StreamLayout()
        self._advance = redis.register_script(ADVANCE_HASH_LUA) if worker else None
        self._advance_by_text = worker is not None and is_cluster(redis)

    async def _advance_hash(self, pipe: Any, key: str, args: list[Any]) -> None:
        """Queue ADVANCE_HASH_LUA for ``key``: by its SHA, or by its text on a Redis Cluster
        (redis-py's cluster pipelines refuse EVALSHA)."""
        if self._advance_by_text:
            pipe.eval(ADVANCE_HASH_LUA, 1, key, *args)
        elif self._advance is not None:
            await self._advance(keys=[key], args=args, client=pipe)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, queue: asyncio.Queue[Frame], stopping: asyncio.Event) -> None:
        """Drain ``queue`` until ``stopping`` is set and the queue is empty, then flush."""
        while not (stopping.is_set() and queue.empty()):
            frames = await self._take(queue, stopping)
            self.metrics.queue_depth.set(queue.qsize())
            self.hold_frames(frames)
            self.settle_open_gaps()
            if (self.held or self.pending_gaps) and time.monotonic() >= self.retry_at:
                await self.flush()
        deadline = time.monotonic() + 5
        while self.held and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.2)
        if self.held:
            self._drop_all("shutdown with Redis unreachable")
        self.settle_open_gaps(force=True)
        await self._publish_pending_gaps()

    async def _take(self, queue: asyncio.Queue[Frame], stopping: asyncio.Event) -> list[Frame]:
        frames: list[Frame] = []
        if queue.empty():
            timeout = 0.2 if not self.held else max(0.01, self.retry_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                frames.append(await asyncio.wait_for(queue.get(), timeout))
        # What is waiting, up to the batch bound in events: a frame holds ~10-1,000 of them,
        # so a bound in frames let a backlog become one batch of a million events that kept
        # the read loop waiting for seconds. Events are counted by their "ev" keys (C level).
        events = sum(frame_events(frame) for frame in frames)
        while not queue.empty() and events < self.batch_max_events:
            frame = queue.get_nowait()
            frames.append(frame)
            events += frame_events(frame)
        return frames

    # -- holding and dropping ---------------------------------------------------------------

    def hold_frames(self, frames: list[Frame]) -> None:
        """Batch and hold ``frames``; a frame with ``gap_before`` starts a new batch after the
        gap is opened, so the gap's start is the newest event of the frames before it."""
        start = 0
        for index, frame in enumerate(frames):
            if frame.gap_before:
                if index > start:
                    self.hold(build_batch(frames[start:index], self.layout))
                self.open_gap(tuple(self.symbols()), frame.gap_before)
                start = index
        if start < len(frames):
            self.hold(build_batch(frames[start:], self.layout))

    def hold(self, batch: Batch) -> None:
        # The statuses among the frames were counted by the read loop (its_router.feed), which
        # acts on them; counting them here too counted each one twice.
        if batch.event_count == 0 and not batch.dead_letters:
            return
        before = self.seen_event_ms
        if batch.reach_ms is not None and batch.max_event_ms is not None:
            self._close_open_gaps(batch.reach_ms)
            self.seen_event_ms = max(self.seen_event_ms or 0, batch.max_event_ms)
        if batch.dead_letters:
            # The invalid events were the exchange's events all the same: the window they lie
            # in (from the newest event before this batch to the first one after it) is a gap.
            self.open_gap(tuple(self.symbols()), "invalid_event", since_ms=before)
        self.held.append(batch)
        self.held_events += batch.event_count
        while self.held_events > self.hold_max_events and len(self.held) > 1:
            self._drop(self.held.popleft(), "hold buffer full while Redis is unreachable")
        self.metrics.held_events.set(self.held_events)

    def _drop(self, batch: Batch, why: str) -> None:
        self.held_events -= batch.event_count
        self.metrics.dropped_events.inc(batch.event_count)
        if batch.min_event_ms is not None and batch.max_event_ms is not None:
            self.pending_gaps.append(
                GapWindow(
                    symbols=tuple(sorted(batch.symbols)),
                    start_ms=batch.min_event_ms,
                    end_ms=batch.max_event_ms + 1,
                    reason="buffer_overflow",
                )
            )
        log.error(
            "dropped %d events: %s; recorded as a gap to backfill",
            batch.event_count,
            why,
            extra={"alert": "router_events_dropped"},
        )

    def _drop_all(self, why: str) -> None:
        while self.held:
            self._drop(self.held.popleft(), why)
        self.metrics.held_events.set(0)

    def record_gap(self, window: GapWindow) -> None:
        """Queue a gap window for publication (published with the next successful write)."""
        self.pending_gaps.append(window)

    def open_gap(
        self, symbols: tuple[str, ...], reason: str, since_ms: int | None = None, pad_ms: int = 0
    ) -> None:
        """A gap on the feed's clock from ``since_ms`` (default: the newest event seen) to the
        first event received after it; published once that event arrives. Without any feed
        time (nothing seen and nothing stored) there is nothing known to be missing."""
        start = since_ms if since_ms is not None else self.seen_event_ms
        if start is None:
            log.info("gap (%s) not recorded: no feed time seen yet", reason)
            return
        self.open_gaps.append(OpenGap(symbols, reason, start - pad_ms, pad_ms))

    def _close_open_gaps(self, reach_ms: int) -> None:
        """The events after the open gaps have begun: each gap closes at how far the batches of
        its first ``gap_settle_s`` after them reach (the newest event, a bar's end), then
        :meth:`settle_open_gaps` publishes it.

        Not at the first batch alone: late reports and corrected bars carry older times than
        the moment they are sent, and the first frame after a reconnect may hold nothing else
        (the chaos soak lost a late-reported trade sent during a feed drop: the reconnect's
        window was closed by that trade alone, as empty). The current events follow it
        within the settle time; a window that ends a little late only backfills a little more.
        """
        now = self.monotonic()
        for gap in self.open_gaps:
            gap.reach_ms = reach_ms if gap.reach_ms is None else max(gap.reach_ms, reach_ms)
            if gap.closing_since is None:
                gap.closing_since = now
        self.settle_open_gaps()

    def settle_open_gaps(self, force: bool = False) -> None:
        """Publish the gaps whose settle time has passed (all with events after them when
        ``force``). A gap the events did not reach past stays open while they are within the
        late-report horizon of its start (late reports only: wait for a current event); further
        behind, the feed itself is behind (a restart behind the stored feed clock, a replay
        started again): nothing was missed in between and no empty window is published (the
        alerter would report it as a 0 s data gap)."""
        now = self.monotonic()
        still_open: list[OpenGap] = []
        for gap in self.open_gaps:
            if gap.reach_ms is None or gap.closing_since is None:
                still_open.append(gap)
                continue
            if not force and now - gap.closing_since < self.gap_settle_s:
                still_open.append(gap)
                continue
            end = gap.reach_ms + gap.pad_ms
            if end > gap.start_ms:
                self.pending_gaps.append(GapWindow(gap.symbols, gap.start_ms, end, gap.reason))
            elif end > gap.start_ms - self.late_report_horizon_ms and not force:
                gap.reach_ms = gap.closing_since = None  # late reports only: wait on
                still_open.append(gap)
            else:
                log.info("gap (%s) closed empty: the feed did not reach past it", gap.reason)
        self.open_gaps = still_open

    @property
    def feed_clock_ms(self) -> int | None:
        """The feed's clock as this process knows it: the newest event time seen."""
        return self.seen_event_ms

    # -- writing ----------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write held batches in order; False (and a retry time) when Redis failed."""
        try:
            await self._publish_pending_gaps(raise_errors=True)
            while self.held:
                await self._write(self.held[0])
                batch = self.held.popleft()
                self.held_events -= batch.event_count
        except (RedisError, OSError) as exc:
            self.metrics.redis_write_errors.inc()
            delay = self.backoff.next_delay()
            self.retry_at = time.monotonic() + delay
            if self.redis_ok:
                log.error(
                    "Redis write failed (%s); holding %d events, retrying in %.1fs",
                    exc,
                    self.held_events,
                    delay,
                    extra={"alert": "router_redis_unreachable"},
                )
            self.redis_ok = False
            return False
        finally:
            self.metrics.held_events.set(self.held_events)
        if not self.redis_ok:
            log.info("Redis writes recovered")
        self.redis_ok = True
        self.backoff.reset()
        return True

    async def _publish_pending_gaps(self, raise_errors: bool = False) -> None:
        while self.pending_gaps:
            try:
                if self.publish_gap is not None:
                    await self.publish_gap(self.pending_gaps[0])
            except (RedisError, OSError):
                if raise_errors:
                    raise
                log.error("gap window could not be published: %s", self.pending_gaps[0])
            self.pending_gaps.pop(0)

    async def _write(self, batch: Batch) -> None:
        with tracer.start_as_current_span("router.write_batch") as span:
            traceparent = current_traceparent()
            if traceparent is not None:  # attributes only when the span is exported
                span.set_attribute("its.events", batch.event_count)
                span.set_attribute("its.types", sorted({tag for _, tag, _ in batch.groups}))
                span.set_attribute("its.symbols", sorted(batch.symbols)[:MAX_SPAN_SYMBOLS])
                if batch.min_event_ms is not None:
                    span.set_attribute("its.min_event_ms", batch.min_event_ms)
            received = batch.first_received_ms
            written_bytes = 0
            async with self.redis.pipeline(transaction=False) as pipe:
                for (source, tag, shard), group in batch.groups.items():
                    stream = self.layout.name(STREAM_FOR_EVENT[tag], shard)
                    for data, count in group.entries(self.max_events_per_entry):
                        fields: dict[Any, Any] = encode_entry_raw(
                            tag, data, count, received, traceparent, source
                        )
                        # No MAXLEN: consumer groups read these streams and a blind MAXLEN
                        # trims what a lagging group has not read. The trimmer bounds them
                        # (its_common.trimming, run by the router's app).
                        pipe.xadd(stream, fields)
                        written_bytes += len(data)
                clock = batch.max_event_ms
                if clock is None or clock <= (self.written_event_ms or 0):
                    clock = None
                gap_mark = self._mark_unpublished_gaps(pipe)
                listed = set(self.symbols()) if self.latest_for_listed_only else None
                latest = [
                    (symbol, trade)
                    for symbol, trade in batch.latest_trades.items()
                    if listed is None or symbol in listed
                ]
                if self.worker is None or self._advance is None:
                    for symbol, trade in latest:
                        mapping = _trade_mapping(trade, received)
                        pipe.hset(latest_trade_key(symbol), mapping=mapping)
                    if clock is not None:
                        pipe.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(clock))
                else:
                    run = self.worker.run
                    for symbol, trade in latest:
                        pairs = _flat(_trade_mapping(trade, received))
                        args = ["t", trade.timestamp, run, *pairs]
                        await self._advance_hash(pipe, latest_trade_key(symbol), args)
                    if clock is not None:
                        pairs = _flat(feed_clock_mapping(clock))
                        args = ["event_ms", clock, run, *pairs]
                        await self._advance_hash(pipe, FEED_CLOCK_KEY, args)
                        pipe.hset(WORKER_CLOCK_KEY, f"w{self.worker.index}", str(clock))
                for received_ms, error in batch.dead_letters:
                    pipe.xadd(
                        Stream.DEAD_LETTER,
                        {
                            "v": "1",
                            "source": "router",
                            "reason": error.reason,
                            "detail": error.detail[:500],
                            "raw": error.raw[:MAX_DEAD_LETTER_BYTES],
                            "rt": str(received_ms),
                        },
                        maxlen=DEFAULT_TRIM[Stream.DEAD_LETTER].maxlen,
                        approximate=True,
                    )
                await pipe.execute()
            self._gap_mark = gap_mark
            if clock is not None:
                self.written_event_ms = clock
            if self.on_written is not None:
                self.on_written(written_bytes)
        stored = now_ms()
        self._account(batch, stored)

    def _mark_unpublished_gaps(self, pipe: Any) -> int | None:
        """Keep the start of the gaps not yet published beside the worker clocks, in the
        pipeline that moves the feed clock past them: a router killed before it published them
        (an open gap waits for its settle time) then has its successor's restart gap start there,
        not at the feed clock (the chaos soak lost trades of a feed drop whose reconnect window
        was still settling when the router was killed)."""
        starts = [gap.start_ms for gap in self.open_gaps]
        starts += [window.start_ms for window in self.pending_gaps]
        mark = min(starts) if starts else None
        if mark != self._gap_mark:
            field = "gap" if self.worker is None else f"gap{self.worker.index}"
            if mark is None:
                pipe.hdel(WORKER_CLOCK_KEY, field)
            else:
                pipe.hset(WORKER_CLOCK_KEY, field, str(mark))
        return mark

    def _account(self, batch: Batch, stored_ms: int) -> None:
        metrics = self.metrics
        for tag, count in batch.counts_by_type().items():
            metrics.events.labels(tag).inc(count)
        for _, error in batch.dead_letters:
            metrics.parse_errors.labels(error.reason).inc()
            log.warning("invalid event sent to the dead-letter stream: %s", error)
        metrics.batch_size.observe(batch.event_count)
        for received_ms in batch.frame_received_ms:
            metrics.receive_to_stored.observe(max(0, stored_ms - received_ms) / 1000)
        for exchange_ms in batch.frame_newest_exchange_ms:
            if exchange_ms:
                metrics.exchange_to_stored.observe(max(0, stored_ms - exchange_ms) / 1000)
        self.written_events += batch.event_count


@dataclass(frozen=True)
class WorkerIdentity:
    """Which write worker a writer is (``index``) and of which router process (``run``)."""

    index: int
    run: str


@dataclass
class OpenGap:
    symbols: tuple[str, ...]
    reason: str
    start_ms: int
    pad_ms: int
    # Set by the first events after the gap: how far they reach, and since when (monotonic).
    reach_ms: int | None = None
    closing_since: float | None = None


def _trade_mapping(trade: Trade, received_ms: int) -> dict[Any, Any]:
    return {
        "p": repr(trade.price),
        "s": str(trade.size),
        "t": str(trade.timestamp),
        "x": str(trade.exchange),
        "i": trade.trade_id,
        "q": str(trade.sequence),
        "rt": str(received_ms),
        "json": encode_frame([trade]),
    }


def _flat(mapping: dict[Any, Any]) -> list[Any]:
    return [item for pair in mapping.items() for item in pair]
