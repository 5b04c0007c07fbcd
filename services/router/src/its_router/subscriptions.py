"""Polygon topics for symbols and channels, and the difference when the symbol list changes."""

from __future__ import annotations

from collections.abc import Iterable


def topics(symbols: Iterable[str], channels: Iterable[str]) -> list[str]:
    """``["T.NVDA", "AM.NVDA", ...]`` in a stable order."""
    return [f"{channel}.{symbol}" for symbol in symbols for channel in channels]


EVERY_SYMBOL = "*"


def feed_topics(symbols: Iterable[str], channels: Iterable[str], every: bool) -> list[str]:
    """The topics of the session: ``T.*, AM.*`` in whole-market mode, else per symbol."""
    return topics([EVERY_SYMBOL] if every else symbols, channels)


def diff(
    old: Iterable[str], new: Iterable[str], channels: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Topics to subscribe and to unsubscribe to go from ``old`` to ``new`` symbols."""
    old_set, new_set = list(dict.fromkeys(old)), list(dict.fromkeys(new))
    channel_list = list(channels)
    added = [s for s in new_set if s not in old_set]
    removed = [s for s in old_set if s not in new_set]
    return topics(added, channel_list), topics(removed, channel_list)


def subscribe_message(action: str, topic_list: Iterable[str]) -> dict[str, str]:
    return {"action": action, "params": ",".join(topic_list)}
