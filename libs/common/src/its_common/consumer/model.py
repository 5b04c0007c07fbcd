"""What a stream consumer hands to its handler, and the handler's side of the contract."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

ItemT = TypeVar("ItemT")
PreparedT = TypeVar("PreparedT")


class PoisonError(ValueError):
    """An entry that can never be handled (undecodable, wrong type...): dead-lettered at once.

    ``reason`` is the short, countable label written to the dead-letter stream.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Delivery(Generic[ItemT]):
    """One stream entry as delivered to this consumer, decoded by the handler.

    ``deliveries`` is Redis' delivery count (1 for a first delivery; more for an entry re-read
    after a crash, a handler failure or a claim from a dead consumer).
    """

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    item: ItemT
    deliveries: int = 1

    @property
    def id_ms(self) -> int:
        """The entry id's millisecond part: when the entry was written."""
        return id_ms(self.entry_id)


class Handler(Protocol[ItemT, PreparedT]):
    """How one stream's entries are decoded and applied.

    ``decode`` runs per entry and raises :class:`PoisonError` (or one of the consumer's
    ``poison_errors``) for an entry that can never succeed. ``prepare`` is CPU work over a batch
    (with ``overlap`` it runs while the previous batch is being handled). ``handle`` applies the
    batch; its effect must be durable when it returns, because the entries are acked right after.
    It returns the number of events handled (or None to count entries). An exception in the
    consumer's ``transient_errors`` (a dependency is down) is retried in hand with backoff and
    never counts as a failed delivery; any other exception is a failed delivery.
    """

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> ItemT: ...

    def prepare(self, batch: Sequence[Delivery[ItemT]]) -> PreparedT: ...

    async def handle(self, prepared: PreparedT) -> int | None: ...


class EntryHandler:
    """A handler over raw entries: ``decode`` keeps the fields, ``handle`` calls ``fn(batch)``.

    For services whose processors already take the raw fields and decode themselves.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[Delivery[dict[bytes, bytes]]]], Awaitable[int | None]],
    ) -> None:
        self._fn = fn

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return fields

    def prepare(
        self, batch: Sequence[Delivery[dict[bytes, bytes]]]
    ) -> Sequence[Delivery[dict[bytes, bytes]]]:
        return batch

    async def handle(self, prepared: Sequence[Delivery[dict[bytes, bytes]]]) -> int | None:
        return await self._fn(prepared)


def id_ms(entry_id: str) -> int:
    """Milliseconds part of a stream id (the time the entry was written)."""
    return int(entry_id.split("-", 1)[0])


def id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
