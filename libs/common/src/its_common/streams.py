"""The Redis Streams contract: stream names, the versioned entry format, consumer groups, trimming.

Entry format, version 1 (all values bytes):

``v``
    format version, ``b"1"``
``type``
    event type of the batch: ``T``, ``Q``, ``A``, ``AM`` (or a service-defined label)
``n``
    number of events in ``data``
``data``
    the events as one Polygon JSON array (exactly what :func:`its_common.events.encode_frame`
    writes), so an entry carries a batch and every consumer decodes with the same codec
``rt``
    receive time in Unix milliseconds (when the batch entered ITS)
``tp``
    optional W3C ``traceparent``, so one trace follows the batch across services
``src``
    optional origin of the events: ``ws`` (the feed's WebSocket, the default when absent) or
    ``rest`` (REST polling; storage treats REST bars as authoritative)

Consumers must reject a version they do not know (:class:`EntryFormatError`), never guess.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from its_common.events import Event, decode_frame, encode_frame

ENTRY_VERSION: Final = b"1"
KEY_PREFIX: Final = "its"


class Stream(StrEnum):
    """Every stream ITS writes. Names are stable: they are the contract between services."""

    TRADES = "its:stream:trades"
    QUOTES = "its:stream:quotes"
    BARS_1S = "its:stream:bars:1s"
    BARS_1M = "its:stream:bars:1m"
    FEED_STATUS = "its:stream:feed-status"
    GAPS = "its:stream:gaps"
    DEAD_LETTER = "its:stream:dead-letter"
    FEATURES = "its:stream:features"
    DECISIONS = "its:stream:decisions"
    ALERT_EVENTS = "its:stream:alert-events"


STREAM_FOR_EVENT: Final[dict[str, Stream]] = {
    "T": Stream.TRADES,
    "Q": Stream.QUOTES,
    "A": Stream.BARS_1S,
    "AM": Stream.BARS_1M,
}


# Market-data streams: written per symbol, so they can be split into shards by symbol group.
SHARDED_STREAMS: Final = frozenset({Stream.TRADES, Stream.QUOTES, Stream.BARS_1S, Stream.BARS_1M})
MAX_SHARDS: Final = 256


@dataclass(frozen=True)
class StreamLayout:
    """Where each stream lives: ``shards`` symbol groups (``ITS_STREAM_SHARDS``, default 1).

    With one shard every stream keeps its name (``its:stream:trades``: today's layout). With
    N > 1 the market-data streams (:data:`SHARDED_STREAMS`) become one stream per symbol group,
    ``its:stream:{g<k>}:trades`` / ``its:stream:{g<k>}:bars:1m``, k = CRC-32 of the symbol mod N:
    the hash tag ``{g<k>}`` puts a group's streams in one Redis Cluster slot, different groups
    spread over the cluster's nodes. One symbol is always in one shard, so each symbol's events
    keep their order; writers write a symbol's events to its shard, consumers read every shard.
    Every other stream (feed status, gaps, dead letters, features, decisions, alert events) is
    not sharded. Changing the shard count of a running system moves every symbol: drain the
    consumers first (the old streams keep their entries until read).
    """

    shards: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"stream shards must be 1..{MAX_SHARDS}, not {self.shards}")

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def shard_of(self, symbol: str) -> int:
        return _shard_of(symbol, self.shards)

    def name(self, stream: Stream, shard: int = 0) -> str:
        """The name of ``stream`` in ``shard`` (the plain name when not sharded)."""
        if not self.sharded or stream not in SHARDED_STREAMS:
            return stream.value
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} outside 0..{self.shards - 1}")
        return f"{KEY_PREFIX}:stream:{{g{shard}}}:{stream.value.removeprefix('its:stream:')}"

    def names(self, stream: Stream) -> list[str]:
        """Every stream a consumer of ``stream`` reads: one per shard."""
        if not self.sharded or stream not in SHARDED_STREAMS:
            return [stream.value]
        return [self.name(stream, shard) for shard in range(self.shards)]

    def expand(self, names: Iterable[str]) -> list[str]:
        """Configured stream names with each sharded stream replaced by its shards."""
        known = {stream.value: stream for stream in Stream}
        return [
            shard
            for name in names
            for shard in (self.names(known[name]) if name in known else [name])
        ]

    def for_symbol(self, stream: Stream, symbol: str) -> str:
        return self.name(stream, self.shard_of(symbol))

    def trim_policies(self) -> dict[str, TrimPolicy]:
        """:data:`DEFAULT_TRIM` over every stream of this layout; a sharded stream's byte budget
        is split between its shards, so the memory bound stays what it was."""
        out: dict[str, TrimPolicy] = {}
        for stream, policy in DEFAULT_TRIM.items():
            names = self.names(stream)
            share = policy
            if len(names) > 1 and policy.budget_bytes is not None:
                share = TrimPolicy(
                    maxlen=max(MIN_OBSERVED_MAXLEN, policy.maxlen // len(names)),
                    max_age_s=policy.max_age_s,
                    budget_bytes=policy.budget_bytes // len(names),
                )
            out.update(dict.fromkeys(names, share))
        return out


@lru_cache(maxsize=65_536)
def _shard_of(symbol: str, shards: int) -> int:
    return zlib.crc32(symbol.encode()) % shards


MIN_MAXLEN: Final = 1_000
# Floor of the MAXLEN derived from observed entry sizes: low enough that the byte budget holds for
# the largest entries (2,000 events, ~180 KB: 60 MiB holds ~350), high enough to keep a history.
MIN_OBSERVED_MAXLEN: Final = 100


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """What may be trimmed from a stream: entries beyond ``maxlen`` and older than ``max_age_s``.

    Sized from the Redis memory budget: ``maxlen = budget_bytes / average_entry_bytes``. Redis runs
    with ``noeviction``, so trimming is what keeps memory bounded, never eviction. Streams that
    consumer groups read are trimmed by :class:`its_common.trimming.StreamTrimmer`, which applies
    the policy only below what every group has read (unless memory is over its high-water mark).
    """

    maxlen: int
    max_age_s: float | None = None
    budget_bytes: int | None = None

    @classmethod
    def for_budget(
        cls, budget_bytes: int, avg_entry_bytes: int, max_age_s: float | None = None
    ) -> TrimPolicy:
        if budget_bytes <= 0 or avg_entry_bytes <= 0:
            raise ValueError("budget and entry size must be positive")
        maxlen = max(MIN_MAXLEN, budget_bytes // avg_entry_bytes)
        return cls(maxlen=maxlen, max_age_s=max_age_s, budget_bytes=budget_bytes)

    def maxlen_for(self, observed_entry_bytes: float) -> int:
        """MAXLEN for the entry size actually observed (batches vary in size): the budget in bytes
        holds, whatever the entry size (down to :data:`MIN_OBSERVED_MAXLEN` entries)."""
        if self.budget_bytes is None or observed_entry_bytes <= 0:
            return self.maxlen
        return max(MIN_OBSERVED_MAXLEN, int(self.budget_bytes / observed_entry_bytes))


MIB: Final = 1024 * 1024
# Budgets within Redis' 200 MB maxmemory (the alert fires at 180 MB). Entries hold batches.
DEFAULT_TRIM: Final[dict[Stream, TrimPolicy]] = {
    Stream.TRADES: TrimPolicy.for_budget(60 * MIB, 2_000, max_age_s=6 * 3600),
    Stream.QUOTES: TrimPolicy.for_budget(30 * MIB, 2_000, max_age_s=3600),
    Stream.BARS_1S: TrimPolicy.for_budget(10 * MIB, 1_000, max_age_s=6 * 3600),
    Stream.BARS_1M: TrimPolicy.for_budget(10 * MIB, 500, max_age_s=48 * 3600),
    Stream.FEED_STATUS: TrimPolicy(maxlen=10_000),
    Stream.GAPS: TrimPolicy(maxlen=10_000),
    Stream.DEAD_LETTER: TrimPolicy.for_budget(5 * MIB, 1_000),
    Stream.FEATURES: TrimPolicy.for_budget(10 * MIB, 1_000, max_age_s=48 * 3600),
    Stream.DECISIONS: TrimPolicy.for_budget(5 * MIB, 500, max_age_s=7 * 24 * 3600),
    Stream.ALERT_EVENTS: TrimPolicy(maxlen=10_000),
}


class EntryFormatError(ValueError):
    """A stream entry that does not follow a known version of the format."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded stream entry."""

    entry_id: str
    event_type: str
    events: list[Event]
    received_ms: int
    traceparent: str | None = None
    source: str = "ws"


def encode_entry(
    event_type: str,
    events: Sequence[Event],
    received_ms: int | None = None,
    traceparent: str | None = None,
    source: str = "ws",
) -> dict[bytes, bytes]:
    return encode_entry_raw(
        event_type, encode_frame(events), len(events), received_ms, traceparent, source
    )


def encode_entry_raw(
    event_type: str,
    data: bytes,
    count: int,
    received_ms: int | None = None,
    traceparent: str | None = None,
    source: str = "ws",
) -> dict[bytes, bytes]:
    """An entry from an already-encoded, already-validated Polygon JSON array of ``count`` events.

    The writer's fast path: frames that decoded cleanly are stored as received, not re-encoded.
    """
    fields = {
        b"v": ENTRY_VERSION,
        b"type": event_type.encode(),
        b"n": str(count).encode(),
        b"data": data,
        b"rt": str(received_ms if received_ms is not None else now_ms()).encode(),
    }
    if traceparent:
        fields[b"tp"] = traceparent.encode()
    if source != "ws":
        fields[b"src"] = source.encode()
    return fields


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    version = fields.get(b"v")
    if version != ENTRY_VERSION:
        raise EntryFormatError(f"entry {ident}: unsupported format version {version!r}")
    try:
        events = decode_frame(fields[b"data"])
        count = int(fields[b"n"])
        received = int(fields[b"rt"])
        event_type = fields[b"type"].decode()
    except (KeyError, ValueError) as exc:
        raise EntryFormatError(f"entry {ident}: {exc}") from exc
    if count != len(events):
        raise EntryFormatError(f"entry {ident}: n={count} but data holds {len(events)} events")
    traceparent = fields.get(b"tp")
    source = fields.get(b"src", b"ws").decode()
    return Entry(
        ident, event_type, events, received, traceparent.decode() if traceparent else None, source
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connect(url: str, *, cluster: bool = False, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client (hiredis parses replies when installed; bytes responses).

    ``cluster=True`` (``ITS_REDIS_CLUSTER``, see :func:`its_common.rediscluster.connect_redis`):
    a :class:`redis.asyncio.cluster.RedisCluster` seeded from ``url`` (any node of the cluster),
    with the same options. It follows MOVED/ASK and routes each key to its node; commands the
    Redis client runs are the same, so it is typed as the plain client.
    """
    kwargs.setdefault("health_check_interval", 30)
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("socket_keepalive", True)
    if cluster:
        client: Any = RedisCluster.from_url(url, decode_responses=False, **kwargs)
        return cast(aioredis.Redis, client)
    return aioredis.Redis.from_url(url, decode_responses=False, **kwargs)


async def add(
    client: aioredis.Redis | Any, stream: str, fields: dict[bytes, bytes], policy: TrimPolicy
) -> Any:
    """XADD with approximate MAXLEN (works on a client or a pipeline).

    For streams nobody reads through a consumer group (tools, tests): a blind MAXLEN trims entries
    a lagging group has not read. Services XADD without it and leave trimming to
    :mod:`its_common.trimming`.
    """
    payload: dict[Any, Any] = fields
    return await _maybe_await(client.xadd(stream, payload, maxlen=policy.maxlen, approximate=True))


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


async def trim_by_age(client: aioredis.Redis, stream: str, policy: TrimPolicy) -> int:
    """Drop entries older than the policy's age bound; returns the count removed.

    Exact MINID trimming: the approximate form only drops whole radix-tree nodes, which on a
    quiet stream can mean nothing at all. Blind to consumer groups: services rely on
    :class:`its_common.trimming.StreamTrimmer`, which applies the age bound below every group's
    read point every second (the router runs it).
    """
    if policy.max_age_s is None:
        return 0
    min_id = f"{now_ms() - int(policy.max_age_s * 1000)}-0"
    return int(await client.xtrim(stream, minid=min_id, approximate=False))


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start: str = "0") -> bool:
    """Create the consumer group (and the stream) if missing; True when it was created."""
    try:
        await client.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


RawEntries = list[tuple[str, str, dict[bytes, bytes]]]


async def read_group(
    client: aioredis.Redis,
    group: str,
    consumer: str,
    streams: Iterable[str],
    count: int = 500,
    block_ms: int | None = 1000,
) -> RawEntries:
    """New entries for this consumer: ``[(stream, entry_id, fields), ...]``.

    For tools and tests; on a Redis Cluster the streams must share a slot (one XREADGROUP)."""
    reply = await client.xreadgroup(
        group, consumer, {stream: ">" for stream in streams}, count=count, block=block_ms
    )
    return _flatten(reply)


async def ack(client: aioredis.Redis, stream: str, group: str, entry_ids: Sequence[str]) -> int:
    if not entry_ids:
        return 0
    return int(await client.xack(stream, group, *entry_ids))


async def claim_stale(
    client: aioredis.Redis,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int = 500,
) -> RawEntries:
    """Take over entries any consumer read but never acked and that sat idle (XAUTOCLAIM).

    A low-level primitive for tools and tests: it cannot tell a dead consumer from a live, busy
    one. Services consume through :mod:`its_common.consumer`, which claims from dead consumers
    only. Walks the whole pending list; entries deleted from the stream meanwhile are dropped
    from the pending list by Redis and not returned.
    """
    claimed: RawEntries = []
    cursor = "0-0"
    while True:
        reply = await client.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
        )
        next_cursor, messages = reply[0], reply[1]
        for entry_id, fields in messages:
            if fields is not None:
                claimed.append((stream, _text(entry_id), fields))
        cursor = _text(next_cursor)
        if cursor == "0-0" or len(claimed) >= count:
            return claimed


async def delivery_counts(
    client: aioredis.Redis, stream: str, group: str, entry_ids: Sequence[str]
) -> dict[str, int]:
    """How many times each pending entry was delivered (to spot poison entries)."""
    counts: dict[str, int] = {}
    for entry_id in entry_ids:
        rows = await client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        if rows:
            counts[entry_id] = int(rows[0]["times_delivered"])
    return counts


def _flatten(reply: Any) -> RawEntries:
    entries: RawEntries = []
    if not reply:
        return entries
    items = reply.items() if isinstance(reply, dict) else reply
    for stream, messages in items:
        name = _text(stream)
        for entry_id, fields in messages:
            entries.append((name, _text(entry_id), fields))
    return entries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def latest_trade_key(symbol: str) -> str:
    """Hash holding the latest trade of one symbol (directly addressable, no stream scan)."""
    return f"{KEY_PREFIX}:last:trade:{symbol}"


def heartbeat_key(service: str, instance: str) -> str:
    return f"{KEY_PREFIX}:heartbeat:{service}:{instance}"


HEARTBEAT_PATTERN: Final = f"{KEY_PREFIX}:heartbeat:*"
