"""Turn received frames into a write batch: validate, group by stream, keep the latest trades.

Pure functions: no I/O. Invalid events become :class:`~its_common.events.CodecError` dead letters
with their raw payload; good events of the same frame still flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from its_common.events import (
    CodecError,
    Event,
    MarketEvent,
    Quote,
    Status,
    Trade,
    decode_frame_lenient,
)


class Frame(NamedTuple):
    received_ms: int
    payload: bytes
    source: str = "ws"  # ws | rest


@dataclass
class Batch:
    """Events of several frames, grouped by (source, event type)."""

    groups: dict[tuple[str, str], list[MarketEvent]] = field(default_factory=dict)
    latest_trades: dict[str, Trade] = field(default_factory=dict)
    dead_letters: list[tuple[int, CodecError]] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    frame_received_ms: list[int] = field(default_factory=list)
    frame_newest_exchange_ms: list[int] = field(default_factory=list)
    event_count: int = 0
    min_event_ms: int | None = None
    max_event_ms: int | None = None
    symbols: set[str] = field(default_factory=set)

    @property
    def first_received_ms(self) -> int:
        return min(self.frame_received_ms) if self.frame_received_ms else 0


def _event_ms(event: MarketEvent) -> int:
    if isinstance(event, Trade | Quote):
        return event.timestamp
    return event.start


def build_batch(frames: Sequence[Frame]) -> Batch:
    batch = Batch()
    for frame in frames:
        events, errors = decode_frame_lenient(frame.payload)
        batch.frame_received_ms.append(frame.received_ms)
        batch.dead_letters.extend((frame.received_ms, error) for error in errors)
        newest_trade = 0
        for event in events:
            if isinstance(event, Status):
                batch.statuses.append(event)
                continue
            _add(batch, frame.source, event)
            if isinstance(event, Trade):
                newest_trade = max(newest_trade, event.timestamp)
                previous = batch.latest_trades.get(event.symbol)
                if previous is None or event.timestamp >= previous.timestamp:
                    batch.latest_trades[event.symbol] = event
        batch.frame_newest_exchange_ms.append(newest_trade)
    return batch


def _add(batch: Batch, source: str, event: MarketEvent) -> None:
    tag = _TAG[type(event)]
    batch.groups.setdefault((source, tag), []).append(event)
    batch.event_count += 1
    batch.symbols.add(event.symbol)
    when = _event_ms(event)
    if batch.min_event_ms is None or when < batch.min_event_ms:
        batch.min_event_ms = when
    if batch.max_event_ms is None or when > batch.max_event_ms:
        batch.max_event_ms = when


def _tags() -> dict[type[Event], str]:
    from its_common.events import EVENT_TYPES

    return {cls: tag for tag, cls in EVENT_TYPES.items()}


_TAG = _tags()


def chunks(events: list[MarketEvent], size: int) -> list[list[MarketEvent]]:
    return [events[i : i + size] for i in range(0, len(events), size)]
