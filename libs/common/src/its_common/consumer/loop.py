"""The one stream consumer of ITS: a consumer-group member that acks only after its handler.

Rules (docs/architecture.md, "Redis Streams"):

* one consumer group per (stream, group), created on first use (``start_id``); a deleted stream
  (NOGROUP) recreates the group from ``0``, since everything in the new stream is unread;
* on start, and after anything that may have left entries with this consumer, it first re-reads
  its own pending entries (XREADGROUP from id 0), then new ones (``>``) in batches;
* the handler's effect is durable when it returns, then the batch is acked; an exception in
  ``transient_errors`` (a dependency is down) is retried in hand with backoff and never counts as
  a failed delivery; any other exception acks nothing, is counted and logged, and the entries
  are re-read one at a time (isolation) after a backoff, each re-read counting a delivery;
* an entry that cannot be decoded, that was delivered more than ``max_deliveries`` times, or
  whose handler failed on its ``max_deliveries``-th delivery goes to the dead-letter stream with
  a reason, and is acked in the same transaction;
* entries of a DEAD consumer only are claimed (see :mod:`.liveness`), then the dead consumer is
  deleted from the group;
* entries trimmed before the group read them are detected (the stream's head against the
  group's last-delivered id, read atomically with every non-blocking read; pending entries that
  come back empty), counted, logged as errors and published as a gap window;
* transient Redis errors are retried with :class:`~its_common.backoff.Backoff` and never end
  the loop; ``stopping`` ends it after the batch in hand is handled and acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from its_common.backoff import Backoff
from its_common.streams import ensure_group

from .config import REDIS_ERRORS, ConsumerConfig
from .lag import Lag, sample_lag
from .liveness import StallGuard, keep_alive, liveness_key, silent_peers, without_liveness
from .metrics import ConsumerMetrics
from .model import Delivery, Handler, id_ms
from .ops import ConsumerOps, Loss, RawEntry, trimmed_loss
from .records import dead_letter_record, publish_gap

log = logging.getLogger("its.consumer")

ItemT = TypeVar("ItemT")
PreparedT = TypeVar("PreparedT")
T = TypeVar("T")
CLAIM_PAGE = 1000


@dataclass(frozen=True, slots=True)
class _Chunk(Generic[ItemT, PreparedT]):
    """Entries handed to one handler call, with what the handler's prepare made of them."""

    deliveries: list[Delivery[ItemT]]
    prepared: PreparedT | None
    error: Exception | None


class StopRequestedError(Exception):
    """The service stops while this consumer waits to retry: leave the entries pending."""


class StreamConsumer(Generic[ItemT, PreparedT]):
    """Runs ``handler`` over one stream as a member of one consumer group (see module doc)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        handler: Handler[ItemT, PreparedT],
        config: ConsumerConfig,
        stopping: asyncio.Event,
        *,
        registry: CollectorRegistry | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.redis = redis
        self.handler = handler
        self.config = config
        self.stopping = stopping
        self.on_idle = on_idle
        self.metrics = ConsumerMetrics.for_registry(registry or CollectorRegistry())
        self.ops = ConsumerOps(redis, config.stream, config.group, config.consumer)
        self.last_lag: Lag | None = None
        labels = (config.stream, config.group)
        self._entries = {
            outcome: self.metrics.entries.labels(*labels, outcome)
            for outcome in (
                "consumed",
                "acked",
                "claimed",
                "dead_lettered",
                "failed",
                "trimmed_unread",
            )
        }
        self._errors = {
            kind: self.metrics.errors.labels(*labels, kind)
            for kind in ("redis", "transient", "handler", "nogroup")
        }
        self._events = self.metrics.events.labels(*labels)
        self._handle_seconds = self.metrics.handle_seconds.labels(*labels)
        self._redis_up = self.metrics.redis_up.labels(*labels)
        self._redis_retry = Backoff(config.retry_initial_s, config.retry_max_s)
        self._handler_retry = Backoff(config.retry_initial_s, config.retry_max_s)
        self._failure_retry = Backoff(config.retry_initial_s, config.retry_max_s)
        self._guard = StallGuard(config.claim_idle_ms, config.block_ms)
        self._start_id = config.start_id
        self._ready = False
        self._recover = True
        self._cursor = "0-0"
        self._isolate = False
        self._failed_in_pass = False
        self._next_claim = 0.0
        self._inflight: asyncio.Task[None] | None = None
        self._redis_down_since: float | None = None
        self._done = asyncio.Event()

    @property
    def stream(self) -> str:
        return self.config.stream

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until ``stopping`` is set; never ends on a Redis error."""
        key = liveness_key(self.config.stream, self.config.group, self.config.consumer)
        helpers = [
            asyncio.create_task(
                keep_alive(self.redis, key, self.config.claim_idle_ms, self._done, self._guard),
                name=f"consumer-alive-{self.config.label}",
            ),
            asyncio.create_task(self._observe(), name=f"consumer-lag-{self.config.label}"),
        ]
        self._redis_up.set(1)
        try:
            while not self.stopping.is_set():
                try:
                    await self._step()
                except StopRequestedError:
                    break
                except ResponseError as exc:
                    if not _is_nogroup(exc):
                        await self._redis_trouble(exc)
                        continue
                    self._errors["nogroup"].inc()
                    log.warning(
                        "group %s of %s is gone (%s): recreating it from the stream's start",
                        self.config.group,
                        self.stream,
                        exc,
                    )
                    self._ready = False
                    self._start_id = "0"
                except REDIS_ERRORS as exc:
                    await self._redis_trouble(exc)
                else:
                    self._redis_ok()
            await self._await_inflight()
        except StopRequestedError:
            log.info("%s: stopped with entries left pending", self.stream)
        finally:
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()
                await asyncio.gather(self._inflight, return_exceptions=True)
            self._done.set()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _step(self) -> None:
        if not self._ready:
            created = await ensure_group(
                self.redis, self.stream, self.config.group, start=self._start_id
            )
            if created:
                log.info(
                    "group %s created on %s at %s", self.config.group, self.stream, self._start_id
                )
            self._ready = True
            self._begin_recovery()
        if self._recover:
            await self._await_inflight()
            await self._recover_step()
            return
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.config.claim_interval_s
            if self._guard.may_claim() and await self._claim_dead():
                self._begin_recovery()
                return
        try:
            entries = await self._read_new()
        except BaseException:
            # The reply may have been lost after Redis delivered entries to us: re-read ours.
            self._begin_recovery()
            raise
        if not entries:
            await self._await_inflight()
            await self._idle()
            return
        batch = await self._prepare(entries, redelivered=False)
        if self.config.overlap:
            # The handler's prepare (CPU) of this batch runs while the previous one is handled.
            chunks = [self._prepare_chunk(chunk) for chunk in self._split(batch, isolate=False)]
            await self._await_inflight()
            if chunks:
                self._inflight = asyncio.create_task(self._handle_chunks(chunks, isolate=False))
        elif batch:
            await self._handle(batch, isolate=False)

    def _begin_recovery(self) -> None:
        self._recover = True
        self._cursor = "0-0"

    async def _await_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    # -- reading -------------------------------------------------------------------------------
    async def _read_new(self) -> list[RawEntry]:
        started = time.monotonic()
        head, entries = await self.ops.read_new_checked(self.config.batch_entries)
        self._guard.observe(started)
        loss = trimmed_loss(head)
        if loss is not None:
            await self._report_loss(loss)
        if entries:
            return entries
        started = time.monotonic()
        entries = await self.ops.read_new_blocking(self.config.batch_entries, self.config.block_ms)
        self._guard.observe(started)
        return entries

    async def _recover_step(self) -> None:
        """One batch of this consumer's own pending entries; a pass ends when none is left."""
        entries = await self.ops.read_own_pending(self._cursor, self.config.batch_entries)
        if not entries:
            if self._failed_in_pass:
                # Some entries failed again: another pass after a pause (each pass counts a
                # delivery, so poison reaches max_deliveries and leaves).
                self._failed_in_pass = False
                self._cursor = "0-0"
                if await _sleep(self._failure_retry, self.stopping):
                    raise StopRequestedError
                return
            self._recover = False
            self._isolate = False
            self._failure_retry.reset()
            return
        log.info("%s: re-reading %d own pending entries", self.stream, len(entries))
        self._cursor = entries[-1][0]
        batch = await self._prepare(entries, redelivered=True)
        if batch:
            await self._handle(batch, isolate=self._isolate)

    async def _prepare(self, entries: list[RawEntry], redelivered: bool) -> list[Delivery[ItemT]]:
        """Decode; trimmed, exhausted and undecodable entries are dealt with here."""
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self._lost_pending(gone)
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        counts: dict[str, int] = {}
        if redelivered and live:
            first, last = live[0][0], live[-1][0]
            counts = await self._retrying(
                "delivery counts", lambda: self.ops.delivery_counts(first, last, len(entries))
            )
        batch: list[Delivery[ItemT]] = []
        for entry_id, fields in live:
            deliveries = counts.get(entry_id, 1)
            if deliveries > self.config.max_deliveries:
                await self._dead_letter(
                    entry_id,
                    fields,
                    "max_deliveries",
                    f"delivered {deliveries} times without being handled",
                    deliveries,
                )
                continue
            try:
                item = self.handler.decode(entry_id, fields)
            except Exception as exc:  # any decode failure is the entry's: it can never succeed
                reason = str(getattr(exc, "reason", type(exc).__name__))
                await self._dead_letter(entry_id, fields, reason, str(exc), deliveries)
                continue
            batch.append(Delivery(self.stream, entry_id, fields, item, deliveries))
        self._entries["consumed"].inc(len(batch))
        return batch

    # -- handling ------------------------------------------------------------------------------
    async def _handle(self, batch: list[Delivery[ItemT]], isolate: bool) -> None:
        chunks = (self._prepare_chunk(chunk) for chunk in self._split(batch, isolate))
        await self._handle_chunks(chunks, isolate)

    def _split(self, batch: list[Delivery[ItemT]], isolate: bool) -> list[list[Delivery[ItemT]]]:
        size = 1 if isolate else (self.config.handle_size or len(batch))
        return [batch[start : start + size] for start in range(0, len(batch), size)]

    def _prepare_chunk(self, chunk: list[Delivery[ItemT]]) -> _Chunk[ItemT, PreparedT]:
        """The handler's prepare, once per chunk (a retry reuses it: it may have state)."""
        try:
            return _Chunk(chunk, self.handler.prepare(chunk), None)
        except Exception as exc:
            return _Chunk(chunk, None, exc)

    async def _handle_chunks(
        self, chunks: Iterable[_Chunk[ItemT, PreparedT]], isolate: bool
    ) -> None:
        for chunk in chunks:
            if not await self._handle_chunk(chunk) and not isolate:
                return  # the rest stays pending, re-read in order after the failed ones

    async def _handle_chunk(self, prepared_chunk: _Chunk[ItemT, PreparedT]) -> bool:
        chunk = prepared_chunk.deliveries
        if prepared_chunk.error is not None:
            return await self._failed(chunk, prepared_chunk.error)
        prepared = cast(PreparedT, prepared_chunk.prepared)
        outage_started: float | None = None
        while True:
            started = time.perf_counter()
            try:
                events = await self.handler.handle(prepared)
            except self.config.transient_errors as exc:
                self._errors["transient"].inc()
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.warning(
                        "%s: handler dependency unavailable (%s: %s); %d entries stay pending",
                        self.stream,
                        type(exc).__name__,
                        exc,
                        len(chunk),
                    )
                if await _sleep(self._handler_retry, self.stopping):
                    raise StopRequestedError from exc
                continue
            except Exception as exc:
                return await self._failed(chunk, exc)
            self._handle_seconds.observe(time.perf_counter() - started)
            if outage_started is not None:
                log.info(
                    "%s: handler recovered after %.1fs",
                    self.stream,
                    time.monotonic() - outage_started,
                )
            self._handler_retry.reset()
            await self._ack([d.entry_id for d in chunk])
            self._events.inc(len(chunk) if events is None else events)
            return True

    async def _ack(self, ids: list[str]) -> None:
        await self._retrying("ack", lambda: self.ops.ack(ids))
        self._entries["acked"].inc(len(ids))

    async def _failed(self, chunk: list[Delivery[ItemT]], exc: Exception) -> bool:
        """A handler failure: dead-letter a lone entry at its last delivery, else re-read later."""
        self._errors["handler"].inc()
        self._entries["failed"].inc(len(chunk))
        detail = f"{type(exc).__name__}: {exc}"
        if len(chunk) == 1 and chunk[0].deliveries >= self.config.max_deliveries:
            only = chunk[0]
            log.error(
                "%s: entry %s failed on delivery %d of %d: %s",
                self.stream,
                only.entry_id,
                only.deliveries,
                self.config.max_deliveries,
                detail,
                exc_info=exc,
            )
            await self._dead_letter(
                only.entry_id, only.fields, self.config.failure_reason, detail, only.deliveries
            )
            return True
        log.error(
            "%s: handler failed on %d entries (first %s, delivery %d of %d); "
            "they stay pending and are retried one by one: %s",
            self.stream,
            len(chunk),
            chunk[0].entry_id,
            chunk[0].deliveries,
            self.config.max_deliveries,
            detail,
            exc_info=exc,
        )
        self._isolate = True
        self._failed_in_pass = True
        if not self._recover:
            self._begin_recovery()
            if await _sleep(self._failure_retry, self.stopping):
                raise StopRequestedError from exc
        return False

    async def _idle(self) -> None:
        if self.on_idle is None:
            return
        try:
            await self.on_idle()
        except self.config.transient_errors as exc:
            self._errors["transient"].inc()
            log.warning("%s: idle work failed (%s: %s)", self.stream, type(exc).__name__, exc)
        except Exception as exc:
            self._errors["handler"].inc()
            log.error("%s: idle work failed: %s", self.stream, exc, exc_info=exc)

    # -- failures and losses -------------------------------------------------------------------
    async def _dead_letter(
        self, entry_id: str, fields: dict[bytes, bytes], reason: str, detail: str, deliveries: int
    ) -> None:
        record = dead_letter_record(
            service=self.config.service or self.config.group,
            stream=self.stream,
            group=self.config.group,
            entry_id=entry_id,
            fields=fields,
            reason=reason,
            detail=detail,
            deliveries=deliveries,
        )
        await self._retrying("dead-letter", lambda: self.ops.dead_letter(record, entry_id))
        self._entries["dead_lettered"].inc()
        log.warning("%s: entry %s dead-lettered: %s (%s)", self.stream, entry_id, reason, detail)

    async def _report_loss(self, loss: Loss) -> None:
        count = 1 if loss.count is None else loss.count
        self._entries["trimmed_unread"].inc(count)
        log.error(
            "%s: %s entries were trimmed before group %s read them (ids after %s, before %s); "
            "publishing a gap window for backfill",
            self.stream,
            "an unknown number of" if loss.count is None else str(loss.count),
            self.config.group,
            loss.after_id,
            loss.before_id,
            extra={"alert": "stream_trimmed_unread"},
        )
        await self._publish_gap(loss.start_ms, loss.end_ms)

    async def _lost_pending(self, entry_ids: Sequence[str]) -> None:
        """Pending entries that were deleted from the stream before they were handled."""
        self._entries["trimmed_unread"].inc(len(entry_ids))
        log.error(
            "%s: %d pending entries were trimmed before they were handled (%s .. %s)",
            self.stream,
            len(entry_ids),
            entry_ids[0],
            entry_ids[-1],
            extra={"alert": "stream_trimmed_unread"},
        )
        await self._publish_gap(id_ms(entry_ids[0]), id_ms(entry_ids[-1]) + 1)
        await self._retrying("ack", lambda: self.ops.ack(list(entry_ids)))

    async def _publish_gap(self, start_ms: int, end_ms: int) -> None:
        source = f"{self.config.service or self.config.group}:{self.config.label}"
        symbols = self.config.gap_symbols
        await self._retrying(
            "gap window", lambda: publish_gap(self.redis, symbols, start_ms, end_ms, source)
        )

    # -- dead consumers ------------------------------------------------------------------------
    async def _claim_dead(self) -> int:
        """Claim the pending entries of dead peers, then delete them; returns entries claimed."""
        threshold = self.config.claim_idle_ms
        silent = silent_peers(await self.ops.consumers(), self.config.consumer, threshold)
        dead = await without_liveness(self.redis, self.stream, self.config.group, silent)
        total = 0
        for peer in dead:
            if peer.pending:
                ids = await self.ops.pending_of(peer.name, threshold, CLAIM_PAGE)
                claimed = await self.ops.claim(ids, threshold)
                total += len(claimed)
                if len(ids) >= CLAIM_PAGE:
                    self._next_claim = 0.0  # more to take: come back right after these
                log.warning(
                    "%s: claimed %d entries of dead consumer %s (unseen for %.1fs)",
                    self.stream,
                    len(claimed),
                    peer.name,
                    peer.idle_ms / 1000,
                )
            key = liveness_key(self.stream, self.config.group, peer.name)
            if await self.ops.delete_if_dead(peer.name, key, threshold):
                log.info("%s: dead consumer %s removed from the group", self.stream, peer.name)
        self._entries["claimed"].inc(total)
        return total

    # -- Redis trouble -------------------------------------------------------------------------
    async def _redis_trouble(self, exc: BaseException) -> None:
        self._redis_failed("Redis call", exc)
        await _sleep(self._redis_retry, self.stopping)

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        """Count and log a failed Redis call (the first of an outage as a warning)."""
        self._errors["redis"].inc()
        self._redis_up.set(0)
        self._guard.trouble()
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning(
                "%s: %s failed (%s: %s); retrying", self.stream, what, type(exc).__name__, exc
            )
        else:
            log.debug("%s: %s still failing: %s", self.stream, what, exc)

    def _redis_ok(self) -> None:
        self._redis_retry.reset()
        self._redis_up.set(1)
        if self._redis_down_since is not None:
            log.info(
                "%s: Redis back after %.1fs", self.stream, time.monotonic() - self._redis_down_since
            )
            self._redis_down_since = None

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until it succeeds; transient Redis errors wait with backoff. Used where
        giving up would lose work already done (an ack after the effect, a dead letter)."""
        while True:
            try:
                result = await call()
            except REDIS_ERRORS as exc:
                self._redis_failed(what, exc)
                if await _sleep(self._redis_retry, self.stopping):
                    raise StopRequestedError from exc
                continue
            self._redis_ok()
            return result

    # -- metrics -------------------------------------------------------------------------------
    async def _observe(self) -> None:
        """Lag gauges every ``metrics_interval_s`` (failures are counted, never fatal)."""
        labels = (self.config.stream, self.config.group)
        while not await _wait(self._done, self.config.metrics_interval_s):
            try:
                lag = await sample_lag(self.ops)
            except REDIS_ERRORS as exc:
                self._errors["redis"].inc()
                log.debug("%s: lag not sampled: %s", self.stream, exc)
                continue
            if lag is None:
                continue
            self.last_lag = lag
            self.metrics.lag.labels(*labels).set(lag.lag_entries)
            self.metrics.pending.labels(*labels).set(lag.pending)
            self.metrics.oldest_pending_age.labels(*labels).set(lag.oldest_pending_age_s)
            self.metrics.backlog_age.labels(*labels).set(lag.backlog_age_s)


def _is_nogroup(exc: ResponseError) -> bool:
    text = str(exc)
    return "NOGROUP" in text or "no such key" in text


async def _sleep(backoff: Backoff, stopping: asyncio.Event) -> bool:
    """Wait the backoff's next delay; True when ``stopping`` was set."""
    await backoff.sleep(stopping)
    return stopping.is_set()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def consumer_counters(consumers: Sequence[StreamConsumer[Any, Any]]) -> dict[str, float]:
    """Lag figures for a service's heartbeat counters (``pending_<label>``...)."""
    counters: dict[str, float] = {}
    for consumer in consumers:
        lag = consumer.last_lag
        if lag is None:
            continue
        label = consumer.config.label
        counters[f"pending_{label}"] = lag.pending
        counters[f"backlog_age_s_{label}"] = round(lag.backlog_age_s, 1)
        counters[f"lag_{label}"] = lag.lag_entries
    return counters
