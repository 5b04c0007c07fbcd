"""How far each stage has got: one number per stage that only grows while the stage produces.

A fault's recovery time is measured as the time until the affected stage's number passes the
value it had when the fault ended (conditions, never sleeps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from its_common.streams import Stream, heartbeat_key
from tests.chaos.stack import SYMBOLS, ChaosStack


def _stream_last_ms(client: redis.Redis, stream: str) -> int:
    newest: Any = client.xrevrange(stream, count=1)
    return int(newest[0][0].split(b"-")[0]) if newest else 0


def _group_delivered_ms(client: redis.Redis, stream: str, group: str) -> int:
    groups: Any = client.xinfo_groups(stream)
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            last = info["last-delivered-id"]
            text = last.decode() if isinstance(last, bytes) else str(last)
            return int(text.split("-")[0])
    return 0


def _heartbeat_ms(client: redis.Redis, service: str) -> int:
    newest = 0
    for key in client.scan_iter(heartbeat_key(service, "*")):
        value = client.hget(key, "ts")
        newest = max(newest, int(value or 0))
    return newest


def probe(stack: ChaosStack, stage: str) -> Callable[[], int]:
    """A reading of ``stage``'s progress (0 while it cannot be read)."""
    client = stack.client
    assert client is not None

    def feed() -> int:
        return stack.feed_clock_ms()

    def stored() -> int:
        newest = stack.sql("SELECT max(ts) FROM trades WHERE symbol = ANY(%s)", list(SYMBOLS))[0][0]
        return 0 if newest is None else int(newest.timestamp() * 1000)

    readers: dict[str, Callable[[], int]] = {
        "feed": feed,
        "stored": stored,
        "features": lambda: _stream_last_ms(client, Stream.FEATURES),
        "decisions": lambda: _stream_last_ms(client, Stream.DECISIONS),
        "trader": lambda: _group_delivered_ms(client, Stream.DECISIONS, "trader"),
        "alerter": lambda: _heartbeat_ms(client, "alerter"),
    }
    read = readers[stage]

    def safe() -> int:
        try:
            return read()
        except (redis.RedisError, OSError, ValueError):
            return 0
        except Exception as exc:  # psycopg errors while PostgreSQL restarts
            if type(exc).__module__.startswith("psycopg"):
                return 0
            raise

    return safe


def wait_progress(
    reading: Callable[[], int], since: int, timeout_s: float, started: float | None = None
) -> float | None:
    """Seconds from ``started`` (monotonic, default now) until ``reading`` passes ``since``;
    None if it did not within ``timeout_s``."""
    started = time.monotonic() if started is None else started
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reading() > since:
            return time.monotonic() - started
        time.sleep(0.05)
    return None
