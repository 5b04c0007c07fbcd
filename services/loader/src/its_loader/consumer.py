"""The consumer loop: read a stream as a consumer-group member, store, ack after commit.

Guarantees (at-least-once delivery plus idempotent writes = exactly-once effect):

* entries are acked only after the transaction that stored them committed;
* on start the consumer first re-reads its own pending entries (a restart under the same name);
  every ``claim_interval_s`` it takes over entries other consumers read but left idle for
  ``claim_idle_ms`` (a killed replica) with XAUTOCLAIM;
* an entry that cannot be decoded goes to the dead-letter stream at once (it can never succeed);
  an entry whose store fails for a data reason is isolated from its batch (the rest is stored)
  and retried; after ``max_deliveries`` deliveries it goes to the dead-letter stream. An entry
  that kills the process every time is caught the same way (its delivery count keeps rising);
* while the database is unavailable the batch is retried with backoff: the entries stay pending
  in Redis (kept owned with ``XCLAIM ... JUSTID``), nothing new is read, nothing is acked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import psycopg
import redis.asyncio as aioredis
from opentelemetry import trace
from redis.exceptions import RedisError

from its_common.events import CodecError
from its_common.streams import (
    DEFAULT_TRIM,
    RawEntries,
    Stream,
    ack,
    claim_stale,
    delivery_counts,
    ensure_group,
    now_ms,
)
from its_common.telemetry import parent_and_links
from its_loader.database import TRANSIENT_ERRORS, Database, sleep_or_stop
from its_loader.metrics import LoaderMetrics

log = logging.getLogger("its.loader.consumer")
tracer = trace.get_tracer("its.loader")

ItemT = TypeVar("ItemT")


class PoisonError(ValueError):
    """An entry that can never be stored (undecodable, wrong event type...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Handler(Protocol[ItemT]):
    """How one stream's entries are decoded and stored."""

    stream: str
    table: str

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> ItemT:
        """The entry as a storable item; raises PoisonError (or a codec error) when it is bad."""
        ...

    def prepare(self, items: Sequence[ItemT]) -> Any:
        """CPU work before the database (the COPY payload); runs while the previous batch
        is being written."""
        ...

    async def write(self, conn: psycopg.AsyncConnection[Any], prepared: Any) -> int:
        """Store a prepared batch in one transaction; returns rows written."""
        ...

    def event_count(self, item: ItemT) -> int: ...


@dataclass(frozen=True, slots=True)
class Pending(Generic[ItemT]):
    entry_id: str
    item: ItemT


@dataclass
class Batch(Generic[ItemT]):
    items: list[Pending[ItemT]]
    fields_by_id: dict[str, dict[bytes, bytes]]
    prepared: Any


class StopRequestedError(Exception):
    """Raised inside the loop when the service stops while a batch waits for the database."""


@dataclass
class ConsumerConfig:
    group: str
    consumer: str
    batch_entries: int = 200
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    max_deliveries: int = 5
    db_retry_max_s: float = 10.0


POISON_ERRORS: tuple[type[BaseException], ...] = (PoisonError, CodecError, ValueError, KeyError)


class StreamConsumer(Generic[ItemT]):
    def __init__(
        self,
        handler: Handler[ItemT],
        redis: aioredis.Redis,
        database: Database,
        config: ConsumerConfig,
        metrics: LoaderMetrics,
        stopping: asyncio.Event,
        counters: dict[str, float] | None = None,
    ) -> None:
        self.handler = handler
        self.redis = redis
        self.db = database
        self.config = config
        self.metrics = metrics
        self.stopping = stopping
        self.counters = counters if counters is not None else {}
        self.stream = handler.stream
        self.label = self.stream.rsplit(":", 1)[-1] if ":" in self.stream else self.stream
        self._next_claim = 0.0
        self._db_down_since: float | None = None
        self._prefetched: list[str] = []

    # -- loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read, prepare and write; batch N+1 is read and prepared while batch N is written."""
        backoff = 0.2
        ready = False
        inflight: asyncio.Task[None] | None = None
        try:
            while not self.stopping.is_set():
                try:
                    if not ready:
                        await ensure_group(self.redis, self.stream, self.config.group)
                        await self._recover_own()
                        ready = True
                    entries, claimed = await self._next_entries()
                    batch = await self.prepare_batch(entries, claimed) if entries else None
                    self._prefetched = [p.entry_id for p in batch.items] if batch else []
                    if inflight is not None:
                        task, inflight = inflight, None
                        await task
                    if batch is not None:
                        inflight = asyncio.create_task(self.commit_batch(batch))
                    backoff = 0.2
                except StopRequestedError:
                    break
                except RedisError as exc:
                    log.warning(
                        "redis error on %s: %s; retrying in %.1fs", self.stream, exc, backoff
                    )
                    if await sleep_or_stop(self.stopping, backoff):
                        break
                    backoff = min(backoff * 2, 5.0)
        finally:
            if inflight is not None:
                try:
                    await inflight
                except (StopRequestedError, RedisError) as exc:
                    log.info("last batch of %s left pending: %s", self.stream, exc)
            await self.db.close()

    async def _recover_own(self) -> None:
        """Re-read this consumer's own pending entries (a restart under the same name)."""
        start = "0-0"
        while not self.stopping.is_set():
            reply = await self.redis.xreadgroup(
                self.config.group,
                self.config.consumer,
                {self.stream: start},
                count=self.config.batch_entries,
            )
            entries = _flatten(reply)
            if not entries:
                return
            log.info("recovering %d own pending entries of %s", len(entries), self.stream)
            await self.handle(entries, recovered=True)
            start = entries[-1][1]

    async def _next_entries(self) -> tuple[RawEntries, bool]:
        """Stale entries of dead consumers first (every claim_interval_s), else new ones."""
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await claim_stale(
                self.redis,
                self.stream,
                self.config.group,
                self.config.consumer,
                self.config.claim_idle_ms,
                count=self.config.batch_entries,
            )
            full = len(claimed) >= self.config.batch_entries
            self._next_claim = now if full else now + self.config.claim_interval_s
            if claimed:
                self.metrics.claimed.labels(self.label).inc(len(claimed))
                log.info("claimed %d stale entries of %s", len(claimed), self.stream)
                return claimed, True
        reply = await self.redis.xreadgroup(
            self.config.group,
            self.config.consumer,
            {self.stream: ">"},
            count=self.config.batch_entries,
            block=self.config.block_ms,
        )
        return _flatten(reply), False

    # -- one batch -----------------------------------------------------------------------------
    async def handle(self, entries: RawEntries, recovered: bool = False) -> None:
        """Prepare and commit one batch (no overlap)."""
        batch = await self.prepare_batch(entries, recovered)
        if batch is not None:
            await self.commit_batch(batch)

    async def prepare_batch(self, entries: RawEntries, recovered: bool) -> Batch[ItemT] | None:
        """Decode, dead-letter the poison, drop exhausted redeliveries, build the payload."""
        gone: list[str] = []
        good: list[Pending[ItemT]] = []
        fields_by_id: dict[str, dict[bytes, bytes]] = {}
        for _, entry_id, fields in entries:
            if not fields:  # trimmed away while pending: nothing to store
                gone.append(entry_id)
                continue
            fields_by_id[entry_id] = fields
            try:
                good.append(Pending(entry_id, self.handler.decode(entry_id, fields)))
            except POISON_ERRORS as exc:
                reason = getattr(exc, "reason", type(exc).__name__)
                await self.dead_letter(entry_id, fields, str(reason), str(exc))
        if gone:
            await ack(self.redis, self.stream, self.config.group, gone)
        if good and recovered:
            good = await self._drop_exhausted(good, fields_by_id)
        if not good:
            return None
        return Batch(good, fields_by_id, self.handler.prepare([p.item for p in good]))

    async def commit_batch(self, batch: Batch[ItemT]) -> None:
        """Write the batch in one transaction, then ack; isolate a failing entry.

        One span per batch (``loader.store_batch``), continuing the trace of the batch's first
        entry (its ``tp``) and linking the others'."""
        parent, links = parent_and_links(
            batch.fields_by_id[p.entry_id].get(b"tp") for p in batch.items
        )
        with tracer.start_as_current_span(
            "loader.store_batch", context=parent, links=links
        ) as span:
            if span.is_recording():
                span.set_attribute("its.stream", self.stream)
                span.set_attribute("its.entries", len(batch.items))
            await self._commit_batch(batch, span)

    async def _commit_batch(self, batch: Batch[ItemT], span: trace.Span) -> None:
        try:
            rows = await self._store_with_retry(batch)
        except (psycopg.Error, PoisonError, RuntimeError) as exc:
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            if len(batch.items) > 1:
                # Isolate the bad entry: store one by one, the good ones get acked.
                log.warning(
                    "batch of %d failed (%s); storing entries one by one", len(batch.items), exc
                )
                for pending in batch.items:
                    single = [pending]
                    prepared = self.handler.prepare([pending.item])
                    await self.commit_batch(Batch(single, batch.fields_by_id, prepared))
                return
            only = batch.items[0]
            await self._failed(only, batch.fields_by_id[only.entry_id], exc)
            return
        ids = [p.entry_id for p in batch.items]
        await self._ack(ids)
        events = sum(self.handler.event_count(p.item) for p in batch.items)
        self.metrics.rows.labels(self.handler.table).inc(rows)
        self.metrics.events.labels(self.label).inc(events)
        self.metrics.entries.labels(self.label, "loaded").inc(len(ids))
        key = f"rows_{self.label}"
        self.counters[key] = self.counters.get(key, 0) + rows
        if span.is_recording():
            span.set_attribute("its.events", events)
            span.set_attribute("its.rows", rows)

    async def _drop_exhausted(
        self, items: list[Pending[ItemT]], fields_by_id: dict[str, dict[bytes, bytes]]
    ) -> list[Pending[ItemT]]:
        """Dead-letter redelivered entries that already had their ``max_deliveries`` attempts."""
        counts = await delivery_counts(
            self.redis, self.stream, self.config.group, [p.entry_id for p in items]
        )
        keep = []
        for pending in items:
            if counts.get(pending.entry_id, 0) > self.config.max_deliveries:
                await self.dead_letter(
                    pending.entry_id,
                    fields_by_id[pending.entry_id],
                    "max_deliveries",
                    f"delivered {counts[pending.entry_id]} times without being stored",
                )
            else:
                keep.append(pending)
        return keep

    async def _store_with_retry(self, batch: Batch[ItemT]) -> int:
        delay = 0.2
        while True:
            try:
                conn = await self.db.connection()
                started = time.perf_counter()
                rows = await self.handler.write(conn, batch.prepared)
                self.metrics.batch_seconds.labels(self.label).observe(time.perf_counter() - started)
                if self._db_down_since is not None:
                    log.info(
                        "database back after %.1fs; %s resumes",
                        time.monotonic() - self._db_down_since,
                        self.stream,
                    )
                    self._db_down_since = None
                self.metrics.db_up.set(1)
                return rows
            except TRANSIENT_ERRORS as exc:
                self.metrics.db_up.set(0)
                self.metrics.db_errors.labels("unavailable").inc()
                if self._db_down_since is None:
                    self._db_down_since = time.monotonic()
                    log.warning(
                        "database unavailable (%s); %d entries of %s stay pending in Redis",
                        type(exc).__name__,
                        len(batch.items),
                        self.stream,
                    )
                await self.db.reset()
                await self._keep_owned([p.entry_id for p in batch.items] + self._prefetched)
                if await sleep_or_stop(self.stopping, delay):
                    raise StopRequestedError from exc
                delay = min(delay * 2, self.config.db_retry_max_s)

    async def _keep_owned(self, ids: list[Any]) -> None:
        """Reset the idle time of entries we still hold, so other replicas do not claim them."""
        try:
            await self.redis.xclaim(
                self.stream, self.config.group, self.config.consumer, 0, ids, justid=True
            )
        except RedisError as exc:
            log.debug("could not refresh pending entries: %s", exc)

    async def _ack(self, ids: list[str]) -> None:
        delay = 0.1
        for _ in range(20):
            try:
                await ack(self.redis, self.stream, self.config.group, ids)
                return
            except RedisError as exc:
                log.warning("ack failed (%s); retrying", exc)
                if await sleep_or_stop(self.stopping, delay):
                    return
                delay = min(delay * 2, 2.0)
        # Not acked: the entries are redelivered and stored again, which changes nothing.

    async def _failed(
        self, pending: Pending[ItemT], fields: dict[bytes, bytes], exc: BaseException
    ) -> None:
        self.metrics.db_errors.labels("data").inc()
        counts = await delivery_counts(
            self.redis, self.stream, self.config.group, [pending.entry_id]
        )
        delivered = counts.get(pending.entry_id, 1)
        if delivered >= self.config.max_deliveries:
            await self.dead_letter(
                pending.entry_id, fields, "store_failed", f"{type(exc).__name__}: {exc}"
            )
            return
        self.metrics.entries.labels(self.label, "retry").inc()
        log.warning(
            "entry %s of %s not stored (attempt %d of %d): %s",
            pending.entry_id,
            self.stream,
            delivered,
            self.config.max_deliveries,
            exc,
        )

    async def dead_letter(
        self, entry_id: str, fields: dict[bytes, bytes], reason: str, detail: str
    ) -> None:
        """Move an entry to the dead-letter stream and ack it, atomically (MULTI/EXEC)."""
        record: dict[Any, Any] = {
            b"v": b"1",
            b"type": b"dead_letter",
            b"service": b"loader",
            b"stream": self.stream.encode(),
            b"entry_id": entry_id.encode(),
            b"reason": reason.encode(),
            b"detail": detail[:2000].encode(),
            b"fields": json.dumps(
                {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
            ).encode(),
            b"ts": str(now_ms()).encode(),
        }
        policy = DEFAULT_TRIM[Stream.DEAD_LETTER]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(Stream.DEAD_LETTER, record, maxlen=policy.maxlen, approximate=True)
            pipe.xack(self.stream, self.config.group, entry_id)
            await pipe.execute()
        self.metrics.entries.labels(self.label, "dead_letter").inc()
        self.counters["dead_letter"] = self.counters.get("dead_letter", 0) + 1
        log.warning("entry %s of %s dead-lettered: %s (%s)", entry_id, self.stream, reason, detail)


def _flatten(reply: Any) -> RawEntries:
    entries: RawEntries = []
    if not reply:
        return entries
    items = reply.items() if isinstance(reply, dict) else reply
    for stream, messages in items:
        name = stream.decode() if isinstance(stream, bytes) else stream
        for entry_id, fields in messages:
            ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            entries.append((name, ident, fields))
    return entries
