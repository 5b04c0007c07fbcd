"""The features service: minute bars (consumer group on ``its:stream:bars:1m``) in, one
:class:`~its_common.featureset.FeatureSet` per completed minute out (``its:stream:features``),
the latest vector per symbol cached (``its:features:latest:<SYMBOL>``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from its_common.backoff import Backoff, until_stores_answer
from its_common.calendar import current_session_open
from its_common.clock import MarketClock
from its_common.consumer import ConsumerConfig, Delivery, StreamConsumer
from its_common.db.connect import connection_kwargs
from its_common.db.sources import SOURCE_REST_PROVISIONAL
from its_common.events import MinuteAgg
from its_common.features import FEATURE_SPEC_HASH, Bar
from its_common.features.spec import BAR_MS
from its_common.featureset import (
    CachedVector,
    FeatureSet,
    SymbolVector,
    cache_key,
    encode_cached,
    encode_feature_set,
)
from its_common.heartbeat import instance_name
from its_common.leader.gate import lead
from its_common.runtime import ServiceContext
from its_common.streams import (
    EntryFormatError,
    RawEntries,
    Stream,
    decode_entry,
    now_ms,
)
from its_common.symbols import LiveSymbols
from its_common.tasks import run_essential
from its_common.telemetry import context_from_traceparent, traceparent_of
from its_features.config import FeaturesSettings
from its_features.live import CompletedMinute, MinuteAssembler

log = logging.getLogger("its.features")
tracer = trace.get_tracer("its.features")


class FeaturesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bars = Counter(
            "its_features_bars", "Minute bars accepted", ["symbol"], registry=registry
        )
        self.dropped = Counter(
            "its_features_bars_dropped",
            "Bars not applied: late (minute already announced; corrections included), stale "
            "(before the current session), outside_session, unknown_symbol, invalid",
            ["reason"],
            registry=registry,
        )
        self.replaced = Counter(
            "its_features_bars_replaced",
            "Re-sent bars that replaced a pending bar of the same minute",
            registry=registry,
        )
        self.filled = Counter(
            "its_features_filled", "Minutes forward-filled", ["symbol"], registry=registry
        )
        self.minutes = Counter(
            "its_features_minutes", "Completed minutes announced", registry=registry
        )
        self.hits = Counter(
            "its_features_cache_hits",
            "Symbol-minutes whose cached vector came from the symbol's own bar of that minute",
            ["symbol"],
            registry=registry,
        )
        self.misses = Counter(
            "its_features_cache_misses",
            "Symbol-minutes announced without the symbol's own bar (forward-filled or not ready)",
            ["symbol"],
            registry=registry,
        )
        self.hit_ratio = Gauge(
            "its_features_cache_hit_ratio",
            "hits / (hits + misses) since start (target >= 0.95 in trading hours)",
            registry=registry,
        )
        self.last_minute = Gauge(
            "its_features_last_minute_timestamp_seconds",
            "Start of the newest announced minute",
            registry=registry,
        )
        self.publish_delay = Histogram(
            "its_features_bar_close_to_publish_seconds",
            "From a minute's close (start + 60 s) to its features entry being written",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.rebuilt = Gauge(
            "its_features_rebuilt_minutes",
            "Minutes replayed from stored bars at start",
            registry=registry,
        )
        self._seen: dict[str, float] = {}

    def sync(self, assembler: MinuteAssembler) -> None:
        """Bring the counters up to the assembler's (it counts; this exports)."""
        c = assembler.counters
        self._inc(self.replaced, "replaced", c.replaced)
        self._inc(self.minutes, "minutes", c.minutes)
        for symbol, n in c.bars.items():
            self._inc(self.bars.labels(symbol), f"bars:{symbol}", n)
        for symbol, n in c.filled.items():
            self._inc(self.filled.labels(symbol), f"filled:{symbol}", n)
        for symbol, n in c.hits.items():
            self._inc(self.hits.labels(symbol), f"hits:{symbol}", n)
        for symbol, n in c.misses.items():
            self._inc(self.misses.labels(symbol), f"misses:{symbol}", n)
        for reason, n in c.dropped.items():
            self._inc(self.dropped.labels(reason), f"dropped:{reason}", n)
        self.hit_ratio.set(assembler.hit_ratio())
        if assembler.last_done is not None:
            self.last_minute.set(assembler.last_done / 1000)

    def _inc(self, counter: Any, key: str, total: float) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = total


def feature_set(minute: CompletedMinute, order: Sequence[str], emitted_ms: int) -> FeatureSet:
    symbols: dict[str, SymbolVector] = {}
    for symbol in order:
        vector = minute.vectors[symbol]
        symbols[symbol] = SymbolVector(
            values=None if vector is None else tuple(float(x) for x in vector),
            open=minute.opens[symbol],
            close=minute.closes[symbol],
            filled=symbol in minute.filled,
        )
    return FeatureSet(
        ts_ms=minute.ts_ms,
        spec_hash=FEATURE_SPEC_HASH,
        symbols=symbols,
        order=tuple(order),
        session_open_ms=minute.session.open_ms,
        session_last=minute.session_last,
        received_ms=minute.received_ms,
        emitted_ms=emitted_ms,
    )


class FeaturesProcessor:
    """Decodes bar entries, feeds the assembler, publishes completed minutes (the service's loop
    body; tests and the benchmark drive it directly)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        assembler: MinuteAssembler,
        metrics: FeaturesMetrics,
        cache_ttl_s: int = 300,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.redis = redis
        self.assembler = assembler
        self.metrics = metrics
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock
        # Trace context per pending minute: the traceparent of the newest entry that carried a
        # bar of that minute (the minute's span continues that trace).
        self.minute_traceparents: dict[int, str] = {}
        self._unpublished: list[CompletedMinute] = []

    def feed(self, entries: RawEntries) -> list[CompletedMinute]:
        completed: list[CompletedMinute] = []
        for _stream, entry_id, fields in entries:
            try:
                entry = decode_entry(entry_id, fields)
            except EntryFormatError as exc:
                log.warning("bar entry skipped: %s", exc)
                self.assembler.counters.dropped["invalid"] = (
                    self.assembler.counters.dropped.get("invalid", 0) + 1
                )
                continue
            for event in entry.events:
                if isinstance(event, MinuteAgg):
                    if entry.traceparent:
                        self.minute_traceparents[event.start] = entry.traceparent
                    bar = Bar(
                        ts=event.start,
                        open=event.open,
                        high=event.high,
                        low=event.low,
                        close=event.close,
                        volume=event.volume,
                        vwap=event.vwap or None,
                    )
                    completed += self.assembler.add_bar(event.symbol, bar, entry.received_ms)
        return completed

    async def handle(self, entries: RawEntries, now: int | None = None) -> list[FeatureSet]:
        """Feed ``entries``, flush minutes past the grace period at ``now``, publish."""
        return await self.emit(self.feed(entries), now)

    async def emit(
        self, completed: Sequence[CompletedMinute], now: int | None = None
    ) -> list[FeatureSet]:
        """Publish ``completed`` plus the minutes past the grace period at ``now``.

        Minutes leave the assembler once: until they are written they are kept here, so a
        failed write (Redis down) is retried with the same minutes, never loses them.
        """
        known = {id(minute) for minute in self._unpublished}
        self._unpublished += [minute for minute in completed if id(minute) not in known]
        self._unpublished += self.assembler.flush(self.clock() if now is None else now)
        published = await self.publish(self._unpublished)
        self._unpublished = []
        self.metrics.sync(self.assembler)
        done = self.assembler.last_done
        if done is not None and self.minute_traceparents:
            for minute in [m for m in self.minute_traceparents if m <= done]:
                del self.minute_traceparents[minute]
        return published

    async def publish(self, completed: Sequence[CompletedMinute]) -> list[FeatureSet]:
        if not completed:
            return []
        emitted = self.clock()
        order = self.assembler.symbols
        # One span per completed minute, a child of the bar entry that brought the minute.
        spans = [
            tracer.start_span(
                "features.publish_minute",
                context=context_from_traceparent(self.minute_traceparents.pop(minute.ts_ms, None)),
            )
            for minute in completed
        ]
        try:
            sets = [feature_set(minute, order, emitted) for minute in completed]
            await self._write(sets, spans)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()
        wall = time.time()
        for fs in sets:
            self.metrics.publish_delay.observe(max(0.0, wall - (fs.ts_ms + BAR_MS) / 1000))
        return sets

    async def _write(self, sets: Sequence[FeatureSet], spans: Sequence[trace.Span]) -> None:
        order = self.assembler.symbols
        pipe = self.redis.pipeline(transaction=False)
        for fs, span in zip(sets, spans, strict=True):
            traceparent = traceparent_of(span)
            if traceparent is not None:
                span.set_attribute("its.minute_ms", fs.ts_ms)
                span.set_attribute("its.symbols", list(fs.order))
                span.set_attribute("its.filled", list(fs.filled))
                span.set_attribute("its.ready", fs.ready)
            for symbol in order:
                vector = fs.symbols[symbol]
                if vector.values is None:
                    continue
                cached = CachedVector(
                    symbol=symbol,
                    ts_ms=fs.ts_ms,
                    spec_hash=fs.spec_hash,
                    values=vector.values,
                    filled=vector.filled,
                )
                pipe.set(cache_key(symbol), encode_cached(cached), ex=self.cache_ttl_s)
            payload: dict[Any, Any] = encode_feature_set(fs, traceparent)
            pipe.xadd(Stream.FEATURES, payload)  # read by groups: the router's trimmer bounds it
        await pipe.execute()


async def stored_bars(
    conn: psycopg.AsyncConnection[Any], symbols: Sequence[str], open_ms: int, until_ms: int
) -> tuple[dict[str, list[Bar]], dict[str, float | None]]:
    """The stored bars of ``[open_ms, until_ms)`` per symbol and each symbol's last close
    before ``open_ms`` (``market_data`` keeps one, the newest, version of each minute)."""
    bars: dict[str, list[Bar]] = {}
    last_close: dict[str, float | None] = {}
    start = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    for symbol in symbols:
        cur = await conn.execute(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume, vwap"
            " FROM market_data WHERE symbol = %s AND ts >= %s AND ts < %s AND source <> %s"
            " ORDER BY ts",
            (symbol, start, end, SOURCE_REST_PROVISIONAL),
        )
        bars[symbol] = [
            Bar(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in await cur.fetchall()
        ]
        cur = await conn.execute(
            "SELECT close FROM market_data WHERE symbol = %s AND ts < %s AND source <> %s"
            " ORDER BY ts DESC LIMIT 1",
            (symbol, start, SOURCE_REST_PROVISIONAL),
        )
        row = await cur.fetchone()
        last_close[symbol] = None if row is None else float(row[0])
    return bars, last_close


async def rebuild(conn: psycopg.AsyncConnection[Any], assembler: MinuteAssembler, now: int) -> int:
    """Restore the state from the current session's stored bars, through the last minute that
    has ended (returns the minutes replayed; 0 outside a session or with nothing stored)."""
    open_ms = current_session_open(now)
    if open_ms > now:
        return 0
    last_ended = now - now % BAR_MS - BAR_MS
    bars, last_close = await stored_bars(conn, assembler.symbols, open_ms, last_ended + BAR_MS)
    return assembler.restore(bars, last_close, last_ended)


async def market_now(redis: aioredis.Redis, settings: FeaturesSettings) -> int:
    """The market clock (its_common.clock): the feed's, or the wall clock when configured."""
    return await MarketClock(redis, settings.clock).now_ms()


async def build_assembler(
    settings: FeaturesSettings, symbols: Sequence[str], now: int, metrics: FeaturesMetrics
) -> MinuteAssembler:
    """A minute assembler for ``symbols`` in the session of ``now`` (market clock), its state
    rebuilt from the session's stored bars (when configured)."""
    assembler = MinuteAssembler(symbols, settings.grace_ms, current_session_open(now))
    if settings.rebuild_on_start:
        async with await psycopg.AsyncConnection.connect(
            **connection_kwargs(settings), autocommit=True
        ) as conn:
            replayed = await rebuild(conn, assembler, now)
        metrics.rebuilt.set(replayed)
        log.info("state rebuilt from %d stored minutes of the current session", replayed)
    return assembler


async def wait_for_market_time(
    clock: MarketClock, stopping: asyncio.Event, log_every_s: float = 60.0
) -> int | None:
    """The market clock's time once the feed has one (None if stopped first). Without it the
    session would be judged by the wall clock, and a replayed day's bars would all be stale."""
    if clock.mode != "feed":
        return await clock.now_ms()
    feed = await clock.feed_ms()
    if feed is not None:
        return feed
    log.info("waiting for the feed's first event (the market clock) before assembling minutes")
    backoff = Backoff(0.5, 5.0)
    waited = 0.0
    while not stopping.is_set():
        waited += await backoff.sleep(stopping)
        feed = await clock.feed_ms()
        if feed is not None:
            return feed
        if waited >= log_every_s:
            log.info("still waiting for the feed's first event")
            waited = 0.0
    return None


class SymbolFollower:
    """Follows the live symbol list (its_common.symbols): on a change the assembler is rebuilt
    for the new symbols (checked at most every ``interval_s``)."""

    def __init__(
        self,
        processor: FeaturesProcessor,
        live: LiveSymbols,
        settings: FeaturesSettings,
        metrics: FeaturesMetrics,
        interval_s: float = 5.0,
    ) -> None:
        self.processor = processor
        self.live = live
        self.settings = settings
        self.metrics = metrics
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s

    async def check(self, now: int) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval_s
        before = self.live.current
        after = await self.live.refresh()
        if after == before:
            return
        log.warning("symbol list changed from %s to %s: features follow", before, after)
        self.processor.assembler = await build_assembler(self.settings, after, now, self.metrics)


async def main(ctx: ServiceContext[FeaturesSettings]) -> None:
    """One features process leads (its_common.leader); a standby waits hot for the lease."""
    await lead(ctx, lambda _leadership: run_features(ctx))


async def run_features(ctx: ServiceContext[FeaturesSettings]) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    metrics = FeaturesMetrics(ctx.registry)
    clock = MarketClock(redis, settings.clock)
    live = LiveSymbols(redis, settings.symbols)
    started: list[tuple[tuple[str, ...], MinuteAssembler]] = []

    async def start_up() -> None:
        # The assembler's rebuild reads PostgreSQL: inside the step, so a database restarting
        # at start is waited through as a Redis outage is.
        now = await wait_for_market_time(clock, ctx.stopping)
        if now is not None:
            listed = await live.refresh()
            started.append((listed, await build_assembler(settings, listed, now, metrics)))

    if not await until_stores_answer(start_up, "start-up", ctx.stopping) or not started:
        return
    symbols, assembler = started[0]
    processor = FeaturesProcessor(redis, assembler, metrics, settings.cache_ttl_s)
    follower = SymbolFollower(processor, live, settings, metrics)

    async def market_time() -> int:
        now = await clock.now_ms()
        await follower.check(now)
        return now

    # One consumer per stream shard of the minute bars (one stream unless ITS_STREAM_SHARDS > 1),
    # sharing the processor: a symbol lives in one shard, so its bars keep their order.
    consumers = [
        StreamConsumer(
            redis,
            BarsHandler(processor, market_time, ctx.counters),
            ConsumerConfig(
                stream=stream,
                group=settings.group,
                consumer=settings.consumer or instance_name(),
                batch_entries=settings.batch_entries,
                block_ms=settings.block_ms,
                service="features",
                gap_symbols=tuple(symbols),
            ),
            ctx.stopping,
            registry=ctx.registry,
            on_idle=lambda: _idle(processor, market_time),
        )
        for stream in settings.stream_layout().names(Stream.BARS_1M)
    ]
    log.info(
        "features starting",
        extra={"consumer": consumers[0].config.consumer, "symbols": symbols},
    )
    if len(consumers) == 1:
        await consumers[0].run()
        return
    await run_essential(ctx.stopping, {f"consume-{c.config.stream}": c.run() for c in consumers})


async def _idle(processor: FeaturesProcessor, now: Callable[[], Awaitable[int]]) -> None:
    """No new bar: minutes past the grace period are still announced (forward-filled)."""
    await processor.emit((), now=await now())


class BarsHandler:
    """The features service's stream handler. Bars feed the assembler once per delivery (in
    ``prepare``); ``handle`` publishes what completed, and a failed publish is retried by the
    consumer framework with the same minutes. Entries are acked after the publish; bars of an
    entry re-delivered after a crash are dropped as late or replace a pending bar (idempotent).
    """

    def __init__(
        self,
        processor: FeaturesProcessor,
        now: Callable[[], Awaitable[int]],
        counters: dict[str, float],
    ) -> None:
        self.processor = processor
        self.now = now
        self.counters = counters

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return fields  # the processor decodes (and counts invalid entries as dropped)

    def prepare(self, batch: Sequence[Delivery[dict[bytes, bytes]]]) -> list[CompletedMinute]:
        return self.processor.feed([(d.stream, d.entry_id, d.fields) for d in batch])

    async def handle(self, completed: list[CompletedMinute]) -> int | None:
        published = await self.processor.emit(completed, now=await self.now())
        assembler = self.processor.assembler
        self.counters["minutes"] = assembler.counters.minutes
        self.counters["hit_ratio"] = round(assembler.hit_ratio(), 4)
        for fs in published:
            if fs.filled:
                log.info("minute %d announced with %s forward-filled", fs.ts_ms, fs.filled)
        return None
