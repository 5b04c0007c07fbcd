"""The stream-consumer framework against a real Redis (no mocks): acks, crashes, dead consumers,
poison, trimmed-before-read losses, a paused server and a deleted stream."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from its_common.consumer import (
    ConsumerConfig,
    Delivery,
    PoisonError,
    StreamConsumer,
    liveness_key,
)
from its_common.gaps import decode_gap
from its_common.localstack.servers import RedisServer
from its_common.streams import Stream, connect, ensure_group
from tests.conditions import wait_until

STREAM = "its:stream:test-consumer"
GROUP = "g"


class Recorder:
    """A handler that records what it handled; can block, fail or refuse entries."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, int]] = []  # (value of field "i", delivery count)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_on: set[str] = set()
        self.calls = 0

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> str:
        value = fields[b"i"].decode()
        if value.startswith("bad"):
            raise PoisonError("bad_format", f"entry {entry_id} is {value}")
        return value

    def prepare(self, batch: Sequence[Delivery[str]]) -> Sequence[Delivery[str]]:
        return batch

    async def handle(self, batch: Sequence[Delivery[str]]) -> int | None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        for delivery in batch:
            if delivery.item in self.fail_on:
                raise RuntimeError(f"cannot handle {delivery.item}")
        self.handled.extend((d.item, d.deliveries) for d in batch)
        return None

    def values(self) -> list[str]:
        return [value for value, _ in self.handled]


class Running:
    def __init__(
        self, redis: aioredis.Redis, handler: Recorder, config: ConsumerConfig, **kw: Any
    ) -> None:
        self.stopping = asyncio.Event()
        self.registry = CollectorRegistry()
        self.consumer = StreamConsumer(
            redis, handler, config, self.stopping, registry=self.registry, **kw
        )
        self.task = asyncio.create_task(self.consumer.run())

    def metric(self, name: str, **labels: str) -> float:
        full = {"stream": self.consumer.stream, "group": self.consumer.config.group, **labels}
        value = self.registry.get_sample_value(name, full)
        return 0.0 if value is None else value

    def entries(self, outcome: str) -> float:
        return self.metric("its_consumer_entries_total", outcome=outcome)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 20)

    async def crash(self) -> None:
        """Die without acking anything (as kill -9 would, minus the liveness key's TTL)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def running(redis_client: aioredis.Redis) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(handler: Recorder, client: aioredis.Redis | None = None, **kw: Any) -> Running:
        settings: dict[str, Any] = {
            "stream": STREAM,
            "group": GROUP,
            "consumer": "c1",
            "block_ms": 100,
            "claim_idle_ms": 60_000,
            "claim_interval_s": 0.1,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.5,
            "metrics_interval_s": 0.1,
            "service": "test",
        }
        extra = {k: kw.pop(k) for k in list(kw) if k in ConsumerConfig.__dataclass_fields__}
        settings.update(extra)
        item = Running(client or redis_client, handler, ConsumerConfig(**settings), **kw)
        started.append(item)
        return item

    yield start
    for item in started:
        if not item.task.done():
            await item.stop()


async def add(redis: aioredis.Redis, *values: str, entry_id: str = "*") -> list[str]:
    ids = []
    for value in values:
        new_id = await redis.xadd(STREAM, {b"i": value.encode()}, id=entry_id)
        ids.append(new_id.decode() if isinstance(new_id, bytes) else str(new_id))
    return ids


async def pending(redis: aioredis.Redis, consumer: str | None = None) -> int:
    if consumer is None:
        return int((await redis.xpending(STREAM, GROUP))["pending"])
    rows = await redis.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=consumer)
    return len(rows)


async def redis_major(redis: aioredis.Redis) -> int:
    info = await redis.info("server")
    return int(str(info["redis_version"]).split(".")[0])


def test_the_death_threshold_is_never_zero() -> None:
    with pytest.raises(ValueError, match="claim_idle_ms"):
        ConsumerConfig(stream=STREAM, group=GROUP, consumer="c", claim_idle_ms=0)
    with pytest.raises(ValueError, match="claim_idle_ms"):
        ConsumerConfig(stream=STREAM, group=GROUP, consumer="c", block_ms=1000, claim_idle_ms=900)


async def test_entries_are_acked_only_after_the_handler_returns(redis_client, running):
    handler = Recorder()
    handler.gate = asyncio.Event()
    await add(redis_client, "a", "b", "c")
    consumer = running(handler)
    await wait_until(handler.entered.is_set)
    assert await pending(redis_client) == 3  # handler still running: nothing acked
    assert consumer.entries("acked") == 0
    handler.gate.set()
    await wait_until(lambda: consumer.entries("acked") == 3)
    assert await pending(redis_client) == 0
    assert handler.values() == ["a", "b", "c"]
    assert consumer.metric("its_consumer_events_total") == 3
    await consumer.stop()


async def test_stop_finishes_and_acks_the_batch_in_hand(redis_client, running):
    handler = Recorder()
    handler.gate = asyncio.Event()
    await add(redis_client, "a", "b")
    consumer = running(handler)
    await wait_until(handler.entered.is_set)
    consumer.stopping.set()
    handler.gate.set()
    await asyncio.wait_for(consumer.task, 10)
    assert handler.values() == ["a", "b"]
    assert await pending(redis_client) == 0
    assert not await redis_client.exists(liveness_key(STREAM, GROUP, "c1"))


async def test_a_crashed_consumer_rereads_its_own_pending_entries_on_restart(redis_client, running):
    first = Recorder()
    first.gate = asyncio.Event()  # never set: the consumer dies mid-batch
    await add(redis_client, "a", "b", "c")
    crashed = running(first)
    await wait_until(first.entered.is_set)
    await crashed.crash()
    assert await pending(redis_client, "c1") == 3
    await add(redis_client, "d")

    second = Recorder()
    restarted = running(second)  # same name, long claim threshold: only its own entries
    await wait_until(lambda: len(second.handled) == 4)
    assert second.handled[:3] == [("a", 2), ("b", 2), ("c", 2)]  # own pending first, re-delivered
    assert second.handled[3] == ("d", 1)
    await wait_until(lambda: restarted.entries("acked") == 4)
    assert await pending(redis_client) == 0
    await restarted.stop()


async def test_dead_consumers_are_claimed_and_removed_but_never_a_live_peer(redis_client, running):
    await ensure_group(redis_client, STREAM, GROUP)
    threshold_ms = 600
    # A live peer whose handler takes far longer than the threshold: Redis does not see it, but
    # its liveness key is refreshed, so its entries must stay with it.
    slow = Recorder()
    slow.gate = asyncio.Event()
    await add(redis_client, "live-1", "live-2")
    peer = running(slow, consumer="busy", claim_idle_ms=threshold_ms)
    await wait_until(slow.entered.is_set)
    assert await pending(redis_client, "busy") == 2
    # A consumer that read and died (no liveness key, never seen again).
    await add(redis_client, "dead-1", "dead-2", "dead-3")
    taken = await redis_client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=10)
    assert len(taken[0][1]) == 3

    rescuer_handler = Recorder()
    rescuer = running(rescuer_handler, consumer="rescuer", claim_idle_ms=threshold_ms)

    async def ghost_gone() -> bool:
        names = [c["name"] for c in await redis_client.xinfo_consumers(STREAM, GROUP)]
        return b"ghost" not in names

    await wait_until(lambda: len(rescuer_handler.handled) == 3)
    assert rescuer_handler.handled == [("dead-1", 2), ("dead-2", 2), ("dead-3", 2)]
    await wait_until(ghost_gone)
    assert rescuer.entries("claimed") == 3
    # The same passes saw the busy peer silent for longer than the threshold: not claimed.
    busy = [c for c in await redis_client.xinfo_consumers(STREAM, GROUP) if c["name"] == b"busy"]
    assert busy and busy[0]["idle"] >= threshold_ms
    assert await pending(redis_client, "busy") == 2
    assert "live-1" not in rescuer_handler.values()

    slow.gate.set()
    await wait_until(lambda: slow.values() == ["live-1", "live-2"])
    await wait_until(lambda: peer.entries("acked") == 2)
    assert await pending(redis_client) == 0
    await peer.stop()
    await rescuer.stop()


async def test_poison_goes_to_the_dead_letter_stream_with_its_reason(redis_client, running):
    handler = Recorder()
    handler.fail_on = {"boom"}
    ids = await add(redis_client, "a", "bad-json", "boom", "b")
    consumer = running(handler, max_deliveries=3, retry_max_s=0.1)

    async def dead_letters() -> list[Any]:
        entries = await redis_client.xrange(Stream.DEAD_LETTER)
        return entries if len(entries) == 2 else []

    letters = {f[b"entry_id"].decode(): f for _, f in await wait_until(dead_letters)}
    undecodable = letters[ids[1]]
    assert undecodable[b"reason"] == b"bad_format"
    assert undecodable[b"deliveries"] == b"1"
    failing = letters[ids[2]]
    assert failing[b"reason"] == b"handler_failed"
    assert failing[b"deliveries"] == b"3"
    assert b"RuntimeError: cannot handle boom" in failing[b"detail"]
    assert failing[b"stream"] == STREAM.encode() and failing[b"service"] == b"test"
    assert b'"i": "boom"' in failing[b"fields"]
    await wait_until(lambda: consumer.entries("acked") == 2)
    assert await pending(redis_client) == 0
    assert sorted(handler.values()) == ["a", "b"]  # the good entries, each once
    assert consumer.entries("dead_lettered") == 2
    assert consumer.entries("failed") >= 3
    await consumer.stop()


async def test_an_entry_delivered_too_often_is_dead_lettered_before_handling(redis_client, running):
    (entry_id,) = await add(redis_client, "crash-loop")
    await ensure_group(redis_client, STREAM, GROUP)
    # Three processes of the same consumer read it and died (it kills them, say).
    await redis_client.xreadgroup(GROUP, "c1", {STREAM: ">"})
    for _ in range(2):
        await redis_client.xreadgroup(GROUP, "c1", {STREAM: "0"})
    handler = Recorder()
    consumer = running(handler, max_deliveries=3)
    letters = await wait_until(lambda: redis_client.xrange(Stream.DEAD_LETTER))
    assert letters[0][1][b"reason"] == b"max_deliveries"
    assert letters[0][1][b"entry_id"] == entry_id.encode()
    assert handler.handled == []
    await consumer.stop()


async def test_entries_trimmed_before_they_were_read_become_a_gap_window(redis_client, running):
    await ensure_group(redis_client, STREAM, GROUP)
    for ms in (1000, 1001, 1002):
        await add(redis_client, f"early-{ms}", entry_id=f"{ms}-0")
    handler = Recorder()
    first = running(handler)
    await wait_until(lambda: len(handler.handled) == 3)
    await first.stop()
    # While nobody reads, the writer outruns the trim budget: 5000..5006 are never read.
    for ms in range(5000, 5010):
        await add(redis_client, f"late-{ms}", entry_id=f"{ms}-0")
    await redis_client.xtrim(STREAM, maxlen=3, approximate=False)

    second = running(handler, gap_symbols=("NVDA", "MSFT"))
    await wait_until(lambda: len(handler.handled) == 6)
    assert handler.values()[3:] == ["late-5007", "late-5008", "late-5009"]
    gaps = await wait_until(lambda: redis_client.xrange(Stream.GAPS))
    window = decode_gap(gaps[0][1])
    assert (window.start_ms, window.end_ms) == (1002, 5007)  # last read .. first remaining
    assert window.symbols == ("NVDA", "MSFT")
    assert window.reason == "trimmed_unread"
    expected = 7 if await redis_major(redis_client) >= 7 else 1  # 6.2 cannot count them
    assert second.entries("trimmed_unread") == expected
    assert len(gaps) == 1  # reported once
    await second.stop()


async def test_pending_entries_trimmed_before_they_were_handled_are_counted(redis_client, running):
    await ensure_group(redis_client, STREAM, GROUP)
    await add(redis_client, "a", entry_id="2000-0")
    await add(redis_client, "b", entry_id="3000-0")
    await add(redis_client, "c", entry_id="4000-0")
    await redis_client.xreadgroup(GROUP, "c1", {STREAM: ">"})  # read, then the process died
    await redis_client.xtrim(STREAM, minid="3500-0", approximate=False)
    handler = Recorder()
    consumer = running(handler)
    await wait_until(lambda: handler.values() == ["c"])
    gaps = await wait_until(lambda: redis_client.xrange(Stream.GAPS))
    window = decode_gap(gaps[0][1])
    assert (window.start_ms, window.end_ms) == (2000, 3001)
    assert consumer.entries("trimmed_unread") == 2
    await wait_until(lambda: consumer.entries("acked") == 1)
    assert await pending(redis_client) == 0
    await consumer.stop()


async def test_a_deleted_stream_recreates_the_group(redis_client, running):
    handler = Recorder()
    await add(redis_client, "a")
    consumer = running(handler, start_id="$")
    await wait_until(lambda: redis_client.xinfo_groups(STREAM))
    await add(redis_client, "b")
    await wait_until(lambda: handler.values() == ["b"])
    await redis_client.delete(STREAM)  # e.g. FLUSHDB or an operator
    await add(redis_client, "c", "d")  # a new stream without the group
    await wait_until(lambda: handler.values() == ["b", "c", "d"])
    assert consumer.metric("its_consumer_errors_total", kind="nogroup") >= 1
    assert not consumer.task.done()
    await consumer.stop()


@pytest.fixture
def own_redis(tmp_path: Path):
    """A Redis server of this test alone (it gets paused)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)  # never leave it stopped
    server.stop()


@pytest.mark.parametrize("socket_timeout", [1.0, None], ids=["timeouts", "runtime-client"])
async def test_a_paused_redis_is_ridden_through_without_losing_anything(
    own_redis, running, socket_timeout
):
    assert own_redis.process is not None
    pid = own_redis.process.pid
    # With a socket timeout the pause shows as errors (TimeoutError) to retry with backoff; the
    # services' client (its_common.streams.connect) has none: its calls wait the pause out.
    client = connect(own_redis.url, socket_timeout=socket_timeout, health_check_interval=0)
    writer = connect(own_redis.url)
    try:
        handler = Recorder()
        consumer = running(handler, client=client, claim_idle_ms=2000)
        for i in range(20):
            await writer.xadd(STREAM, {b"i": f"before-{i}".encode()})
        await wait_until(lambda: len(handler.handled) == 20)
        os.kill(pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            # Written while Redis is stopped: these calls complete once it runs again.
            during = [asyncio.ensure_future(add(writer, f"during-{i}")) for i in range(5)]

            def paused_long_enough() -> bool:
                errors = consumer.metric("its_consumer_errors_total", kind="redis")
                enough_errors = socket_timeout is None or errors >= 3
                return enough_errors and time.monotonic() - paused_at >= 3.0

            await wait_until(paused_long_enough, 30)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.wait_for(asyncio.gather(*during), 30)
        for i in range(20):
            await writer.xadd(STREAM, {b"i": f"after-{i}".encode()})
        await wait_until(lambda: len(handler.handled) >= 45, 30)
        values = handler.values()
        expected = [f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)]
        expected += [f"during-{i}" for i in range(5)]
        assert sorted(values) == sorted(expected)  # everything, each once
        assert not consumer.task.done()
        await wait_until(lambda: consumer.metric("its_consumer_redis_up") == 1)
        await wait_until(lambda: consumer.entries("acked") == 45)
        assert int((await writer.xpending(STREAM, GROUP))["pending"]) == 0
        await consumer.stop()
    finally:
        await client.aclose()
        await writer.aclose()


async def test_lag_metrics(redis_client, running):
    handler = Recorder()
    handler.gate = asyncio.Event()
    await add(redis_client, "a", "b")
    consumer = running(handler, batch_entries=1)
    await wait_until(handler.entered.is_set)
    await wait_until(lambda: consumer.metric("its_consumer_pending_entries") == 1)
    await wait_until(lambda: consumer.metric("its_consumer_lag_entries") != 0)
    assert consumer.metric("its_consumer_oldest_pending_age_seconds") >= 0
    handler.gate.set()
    await wait_until(lambda: consumer.metric("its_consumer_lag_entries") == 0)
    await wait_until(lambda: consumer.metric("its_consumer_pending_entries") == 0)
    await consumer.stop()


def test_trimmed_loss_rules() -> None:
    from its_common.consumer.ops import HeadState, trimmed_loss

    def head(last: str | None, first: str | None, added=None, read=None, length=0) -> HeadState:
        return HeadState(last, first, None, added, read, length)

    assert trimmed_loss(head(None, "5-0")) is None  # the group never read anything
    assert trimmed_loss(head("0-0", "5-0")) is None
    assert trimmed_loss(head("5-0", None)) is None  # empty stream
    assert trimmed_loss(head("5-0", "5-0")) is None  # last read entry still there
    assert trimmed_loss(head("5-0", "3-0")) is None
    # Redis 7: only entries the group had read were trimmed (a quiet stream aged out).
    assert trimmed_loss(head("5-0", "9-0", added=10, read=9, length=1)) is None
    loss = trimmed_loss(head("5-1", "9-0", added=20, read=9, length=4))
    assert loss is not None and (loss.count, loss.start_ms, loss.end_ms) == (7, 5, 9)
    # Redis 6.2 cannot count: one lost entry is assumed.
    loss = trimmed_loss(head("5-0", "9-0"))
    assert loss is not None and loss.count is None


async def test_no_claims_for_a_threshold_after_own_redis_trouble() -> None:
    from its_common.consumer.liveness import StallGuard

    guard = StallGuard(threshold_ms=200, expected_ms=50)
    assert guard.may_claim()
    guard.observe(time.monotonic() - 0.5)  # a call that took 500 ms > 50 + 100: Redis stalled
    assert not guard.may_claim()
    await wait_until(guard.may_claim, 5)
    guard.observe(time.monotonic())  # a quick call changes nothing
    assert guard.may_claim()
