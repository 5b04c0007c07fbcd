"""The inference service: features entries (consumer group on ``its:stream:features``) in, one
:class:`its_common.decisions.Decision` per completed minute out (``its:stream:decisions`` and the
``signals`` table)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
import torch
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from its_common.backoff import until_stores_answer
from its_common.calendar import current_session_open
from its_common.clock import MarketClock
from its_common.consumer import ConsumerConfig, Delivery, StreamConsumer
from its_common.db.connect import connection_kwargs
from its_common.decisions import Decision, encode_decision
from its_common.features import FEATURE_SPEC_HASH
from its_common.features.spec import BAR_MS
from its_common.featureset import FeatureSet, decode_feature_set
from its_common.heartbeat import instance_name
from its_common.leader.gate import lead
from its_common.promotion import read_pinned
from its_common.runtime import ServiceContext
from its_common.streams import (
    EntryFormatError,
    RawEntries,
    Stream,
    ensure_group,
    now_ms,
)
from its_common.symbols import publish_active_model
from its_common.telemetry import context_from_traceparent, traceparent_of
from its_inference import bundles
from its_inference.bundles import Bundle, BundleError
from its_inference.config import InferenceSettings
from its_inference.policy import FeatureMismatchError, LivePolicy, Step

log = logging.getLogger("its.inference")
tracer = trace.get_tracer("its.inference")

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1)
# Signals rows kept back while the database is unavailable (a day has 390 minutes).
MAX_UNWRITTEN_SIGNALS = 2_000
INSERT_SIGNAL = (
    "INSERT INTO signals (ts, model_version, action, action_name, confidence, features)"
    " VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s)"
    " ON CONFLICT (model_version, ts) DO NOTHING"
)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "its_inference_decision_latency_seconds",
            "Features entry decoded -> decision made (observation, normalization, LSTM step)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bar_close = Histogram(
            "its_inference_bar_close_to_decision_seconds",
            "A minute's close (start + 60 s) -> its decision made",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.decisions = Counter(
            "its_inference_decisions", "Decisions made", ["action_name"], registry=registry
        )
        self.skipped = Counter(
            "its_inference_skipped",
            "Features entries without a decision: duplicate, not_ready, invalid, mismatch",
            ["reason"],
            registry=registry,
        )
        self.model = Gauge(
            "its_inference_model_info",
            "The bundle in use (value 1)",
            ["version", "demo"],
            registry=registry,
        )
        self.refused = Counter(
            "its_inference_bundles_refused",
            "Bundles found but refused (other feature spec, unreadable...)",
            registry=registry,
        )
        self.signal_failures = Counter(
            "its_inference_signal_write_failures",
            "Decisions not written to the signals table (database unavailable)",
            registry=registry,
        )
        self.swaps = Counter(
            "its_inference_bundle_swaps",
            "New bundles taken into use at a session boundary",
            registry=registry,
        )


def _demo_label(decision: Decision) -> str:
    """ "DEMO model " (with its training market's planted pattern, if any) or ""."""
    if not decision.demo:
        return ""
    return f"DEMO model ({decision.demo_market}) " if decision.demo_market else "DEMO model "


def decision_of(step: Step, fs: FeatureSet, policy: LivePolicy, latency_s: float) -> Decision:
    return Decision(
        ts_ms=step.ts_ms,
        action=step.action,
        action_name=step.action_name,
        confidence=step.confidence,
        model_version=policy.version,
        features_hash=FEATURE_SPEC_HASH,
        symbols=policy.symbols,
        session_start=step.session_start,
        session_last=step.session_last,
        filled=fs.filled,
        demo=policy.demo,
        demo_market=policy.demo_market,
        decided_ms=now_ms(),
        latency_us=int(latency_s * 1e6),
    )


class InferenceProcessor:
    """Decodes features entries, runs the policy, writes decisions (the service's loop body;
    tests and the benchmark drive it directly). A staged bundle replaces the policy at the next
    session's first minute."""

    def __init__(
        self,
        redis: aioredis.Redis,
        policy: LivePolicy,
        metrics: InferenceMetrics,
        conn: psycopg.AsyncConnection[Any] | None = None,
        clock: Callable[[], float] = time.time,
        write_signals: bool | None = None,
    ) -> None:
        self.redis = redis
        self.policy = policy
        self.metrics = metrics
        self.conn = conn
        # Whether signals are written at all (default: when built with a connection; the
        # service says so itself, its connection may come later); rows a database outage kept
        # back go with the next write.
        self.write_enabled = conn is not None if write_signals is None else write_signals
        self.unwritten: list[tuple[Any, ...]] = []
        self.clock = clock
        self.staged: Bundle | None = None
        self._announced: str | None = None
        self._show_model()

    def _show_model(self) -> None:
        self.metrics.model.clear()
        self.metrics.model.labels(self.policy.version, str(self.policy.demo).lower()).set(1)

    async def announce(self) -> None:
        """Publish the bundle in use (its pair guards the live symbol list, its_common.symbols);
        again after a swap."""
        if self._announced == self.policy.version:
            return
        await publish_active_model(
            self.redis,
            self.policy.version,
            self.policy.symbols,
            self.policy.demo,
            str(self.policy.bundle.meta.get("created_at", "")),
        )
        self._announced = self.policy.version

    def stage(self, bundle: Bundle) -> None:
        """Use ``bundle`` from the next session open on (no restart)."""
        self.staged = bundle
        log.info("bundle %s staged: used from the next session open", bundles.version_of(bundle))

    def _maybe_swap(self, fs: FeatureSet) -> None:
        if self.staged is None or fs.session_open_ms == self.policy.session_open_ms:
            return
        old = self.policy
        self.policy = LivePolicy(self.staged, capital=old.equity)
        self.staged = None
        self.metrics.swaps.inc()
        self._show_model()
        log.warning(
            "%smodel %s in use from this session (was %s)",
            "DEMO " if self.policy.demo else "",
            self.policy.version,
            old.version,
        )

    def decide(self, entries: RawEntries) -> list[tuple[Decision, FeatureSet]]:
        """Run the policy over ``entries`` (in order); the decisions made."""
        made = self._decide(entries)
        for _, _, span in made:
            span.end()
        return [(decision, fs) for decision, fs, _ in made]

    def _decide(self, entries: RawEntries) -> list[tuple[Decision, FeatureSet, trace.Span]]:
        """As :meth:`decide`, plus each decision's ``inference.decide`` span, still open (the
        caller ends it once the decision is written). Every entry gets a span, a child of the
        features entry's ``tp``; spans of entries without a decision end here."""
        out: list[tuple[Decision, FeatureSet, trace.Span]] = []
        for _stream, entry_id, fields in entries:
            span = tracer.start_span(
                "inference.decide", context=context_from_traceparent(fields.get(b"tp"))
            )
            decision = self._decide_one(entry_id, fields, span)
            if decision is None:
                span.end()
            else:
                out.append((*decision, span))
        return out

    def _decide_one(
        self, entry_id: str, fields: dict[bytes, bytes], span: trace.Span
    ) -> tuple[Decision, FeatureSet] | None:
        recording = span.is_recording()
        started = time.perf_counter()
        try:
            fs = decode_feature_set(entry_id, fields)
        except EntryFormatError as exc:
            log.warning("features entry skipped: %s", exc)
            self.metrics.skipped.labels("invalid").inc()
            if recording:
                span.set_attribute("its.outcome", "invalid")
            return None
        self._maybe_swap(fs)
        last = self.policy.last_ts
        duplicate = last is not None and fs.ts_ms <= last
        try:
            step = self.policy.step(fs)
        except FeatureMismatchError as exc:
            log.error("features entry refused: %s", exc)
            self.metrics.skipped.labels("mismatch").inc()
            if recording:
                span.set_attribute("its.outcome", "mismatch")
            return None
        if recording:
            span.set_attribute("its.minute_ms", fs.ts_ms)
            span.set_attribute("its.symbols", list(self.policy.symbols))
            span.set_attribute("its.model_version", self.policy.version)
        if step is None:
            reason = "duplicate" if duplicate else "not_ready"
            self.metrics.skipped.labels(reason).inc()
            if recording:
                span.set_attribute("its.outcome", reason)
            return None
        latency = time.perf_counter() - started
        decision = decision_of(step, fs, self.policy, latency)
        self.metrics.latency.observe(latency)
        self.metrics.bar_close.observe(max(0.0, self.clock() - (fs.ts_ms + BAR_MS) / 1000.0))
        self.metrics.decisions.labels(decision.action_name).inc()
        if recording:
            span.set_attribute("its.outcome", "decision")
            span.set_attribute("its.action_name", decision.action_name)
            span.set_attribute("its.confidence", decision.confidence)
        return decision, fs

    def warm(self, entries: RawEntries) -> int:
        """Replay entries through the policy without writing anything (LSTM state and shadow
        portfolio after a restart); returns the minutes replayed."""
        count = 0
        for _stream, entry_id, fields in entries:
            try:
                fs = decode_feature_set(entry_id, fields)
                self._maybe_swap(fs)
                if self.policy.step(fs) is not None:
                    count += 1
            except (EntryFormatError, FeatureMismatchError) as exc:
                log.warning("warm-up entry skipped: %s", exc)
        return count

    async def handle(self, entries: RawEntries) -> list[Decision]:
        return await self.publish(self._decide(entries))

    async def publish(
        self, traced: Sequence[tuple[Decision, FeatureSet, trace.Span]]
    ) -> list[Decision]:
        """Write decisions made by :meth:`_decide` (stream, then the signals table).

        The policy steps once per features entry; if the write fails the same decisions are
        written again by a retry (never decided twice: that would step the LSTM twice). Their
        spans end once the stream write succeeded.
        """
        if not traced:
            return []
        made = [(decision, fs) for decision, fs, _ in traced]
        try:
            pipe = self.redis.pipeline(transaction=False)
            for decision, _, span in traced:
                payload: dict[Any, Any] = encode_decision(decision, traceparent_of(span))
                pipe.xadd(Stream.DECISIONS, payload)  # the router's trimmer bounds it
            await pipe.execute()
        except BaseException as exc:
            for _, _, span in traced:
                span.record_exception(exc)
            raise
        for _, _, span in traced:
            span.end()
        await self.write_signals(made)
        for decision, _ in made:
            log.info(
                "decision %s (%.3f) on minute %d by %s%s",
                decision.action_name,
                decision.confidence,
                decision.ts_ms,
                _demo_label(decision),
                decision.model_version,
            )
        return [decision for decision, _ in made]

    async def write_signals(self, made: Sequence[tuple[Decision, FeatureSet]]) -> None:
        """Insert the decisions' ``signals`` rows, with those a database outage kept back
        (bounded by :data:`MAX_UNWRITTEN_SIGNALS`; the oldest beyond it are counted and logged
        as lost)."""
        if not self.write_enabled:
            return
        rows = self.unwritten + [
            (
                d.ts_ms,
                d.model_version,
                d.action,
                d.action_name,
                d.confidence,
                json.dumps(
                    {
                        "feature_spec_hash": d.features_hash,
                        "filled": list(d.filled),
                        "demo": d.demo,
                        **({"demo_market": d.demo_market} if d.demo_market else {}),
                        "values": {s: list(fs.symbols[s].values or ()) for s in d.symbols},
                    }
                ),
            )
            for d, fs in made
        ]
        self.unwritten = []
        if self.conn is None:
            self._keep_unwritten(rows, "no database connection")
            return
        try:
            async with self.conn.cursor() as cur:
                await cur.executemany(INSERT_SIGNAL, rows)  # ON CONFLICT DO NOTHING: idempotent
        except psycopg.Error as exc:
            self._keep_unwritten(rows, str(exc))
            if isinstance(exc, psycopg.OperationalError) or self.conn.closed:
                await self.conn.close()
                self.conn = None  # reconnected by the service loop

    def _keep_unwritten(self, rows: list[tuple[Any, ...]], why: str) -> None:
        lost = max(0, len(rows) - MAX_UNWRITTEN_SIGNALS)
        if lost:
            self.metrics.signal_failures.inc(lost)
            log.error("%d signals rows lost (more than %d kept back)", lost, MAX_UNWRITTEN_SIGNALS)
        self.unwritten = rows[lost:]
        log.warning("signals not written yet (%d rows kept for the next write): %s", len(rows), why)


async def watch_bundles(
    processor: InferenceProcessor,
    root: Path,
    pinned: Callable[[], str],
    interval_s: float,
    stopping: asyncio.Event,
) -> None:
    """Stage a newer (or newly promoted) bundle when one appears (refused ones are logged once
    each); ``pinned()`` is read every round: a promotion or rollback by its-ops."""
    refused: set[str] = set()
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), interval_s)
            return
        except TimeoutError:
            pass
        try:
            path = await asyncio.to_thread(bundles.find_bundle, root, pinned())
        except BundleError:
            continue
        current = processor.staged.path if processor.staged else processor.policy.bundle.path
        if path.resolve() == current.resolve() or str(path) in refused:
            continue
        try:
            bundle = await asyncio.to_thread(bundles.load, path)
        except (BundleError, OSError, ValueError) as exc:
            refused.add(str(path))
            processor.metrics.refused.inc()
            log.error("bundle %s refused: %s", path, exc)
            continue
        processor.stage(bundle)


def pinned_bundle(settings: InferenceSettings) -> str:
    """The promoted bundle (its_common.promotion file), else ``ITS_INFERENCE_BUNDLE_VERSION``."""
    return read_pinned(settings.bundle_version_file, settings.bundle_version)


async def connect_signals(settings: InferenceSettings) -> psycopg.AsyncConnection[Any] | None:
    if not settings.write_signals:
        return None
    try:
        return await psycopg.AsyncConnection.connect(**connection_kwargs(settings), autocommit=True)
    except psycopg.OperationalError as exc:
        log.warning("signals table unavailable (decisions still go to the stream): %s", exc)
        return None


WARM_UP_ENTRIES = 2_000  # more than a session's minutes (390)


async def session_history(redis: aioredis.Redis, stream: str) -> RawEntries:
    """The features entries of the session in progress on the market clock (its_common.clock),
    oldest first: stream ids are write times, so the session is told by each entry's own
    ``session_open_ms``, not by id (a replayed or accelerated day works)."""
    now = await MarketClock(redis).now_ms()
    open_ms = current_session_open(now)
    if open_ms > now:
        return []
    recent: Any = await redis.xrevrange(stream, count=WARM_UP_ENTRIES)
    out: RawEntries = []
    for entry_id, fields in reversed(recent or []):
        try:
            fs = decode_feature_set(_text(entry_id), fields)
        except EntryFormatError:
            continue
        if fs.session_open_ms == open_ms:
            out.append((stream, _text(entry_id), fields))
    return out


async def main(ctx: ServiceContext[InferenceSettings]) -> None:
    settings = ctx.settings
    ctx.require_redis()
    metrics = InferenceMetrics(ctx.registry)
    torch.set_num_threads(settings.torch_threads)
    root = Path(settings.bundle_dir)
    try:
        bundle = await asyncio.to_thread(bundles.load, root, pinned_bundle(settings))
    except BundleError as exc:
        log.error("no usable model bundle: %s", exc)
        raise
    # One inference leads (its_common.leader); a standby has its bundle loaded and waits hot.
    await lead(ctx, lambda _leadership: serve(ctx, bundle, metrics))


async def serve(
    ctx: ServiceContext[InferenceSettings], bundle: Bundle, metrics: InferenceMetrics
) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    root = Path(settings.bundle_dir)
    conn = await connect_signals(settings)
    processor = InferenceProcessor(
        redis, LivePolicy(bundle), metrics, conn, write_signals=settings.write_signals
    )
    stream = Stream.FEATURES.value

    async def start_up() -> None:
        await ensure_group(redis, stream, settings.group, start="$")
        await processor.announce()
        if settings.warm_up:
            replayed = processor.warm(await session_history(redis, stream))
            log.info("warm-up: %d minutes of the current session replayed", replayed)

    if not await until_stores_answer(start_up, "start-up", ctx.stopping):
        return
    watcher = asyncio.create_task(
        watch_bundles(
            processor,
            root,
            lambda: pinned_bundle(settings),
            settings.reload_interval_s,
            ctx.stopping,
        ),
        name="bundle-watcher",
    )
    consumer = StreamConsumer(
        redis,
        FeaturesHandler(processor, settings, ctx.counters),
        ConsumerConfig(
            stream=stream,
            group=settings.group,
            consumer=settings.consumer or instance_name(),
            start_id="$",
            batch_entries=settings.batch_entries,
            block_ms=settings.block_ms,
            service="inference",
            gap_symbols=tuple(settings.symbols),
        ),
        ctx.stopping,
        registry=ctx.registry,
    )
    try:
        await consumer.run()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if processor.conn is not None:
            await processor.conn.close()


Traced = list[tuple[Decision, FeatureSet, trace.Span]]


class FeaturesHandler:
    """The inference service's stream handler: the policy steps once per features entry (in
    ``prepare``); ``handle`` writes the decisions, retried as they are if Redis fails."""

    def __init__(
        self, processor: InferenceProcessor, settings: InferenceSettings, counters: dict[str, float]
    ) -> None:
        self.processor = processor
        self.settings = settings
        self.counters = counters
        self._retry_signals_at = 0.0

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return fields  # the processor decodes (and counts invalid entries as skipped)

    def prepare(self, batch: Sequence[Delivery[dict[bytes, bytes]]]) -> Traced:
        return self.processor._decide([(d.stream, d.entry_id, d.fields) for d in batch])

    async def handle(self, traced: Traced) -> int | None:
        decisions = await self.processor.publish(traced)
        await self.processor.announce()
        self.counters["decisions"] = self.counters.get("decisions", 0) + len(decisions)
        processor, settings = self.processor, self.settings
        reconnect = processor.conn is None and settings.write_signals
        if reconnect and time.monotonic() > self._retry_signals_at:
            self._retry_signals_at = time.monotonic() + 30.0
            processor.conn = await connect_signals(settings)
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
