"""Capped exponential backoff with jitter ("equal jitter": half fixed, half random).

The one retry schedule of ITS: every retry loop (feed reconnects, REST polling, Redis and
PostgreSQL outages, stream consumers) waits ``Backoff.next_delay()`` and calls ``reset()`` after a
success, so a fleet of restarted pods does not retry in lock-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
from redis.exceptions import RedisError

from its_common.redaction import redact

log = logging.getLogger("its.backoff")


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The next wait: uniform in [cap/2, cap], cap = min(max, initial * 2**attempt)."""
        cap = min(self.max_s, self.initial_s * (2.0**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        jitter = float(self.rng.random())
        return cap / 2 + jitter * cap / 2

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self, stopping: asyncio.Event | None = None) -> float:
        """Wait the next delay (returns it); returns early when ``stopping`` is set."""
        delay = self.next_delay()
        if stopping is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
        return delay


async def until_stores_answer(
    step: Callable[[], Awaitable[None]], what: str, stopping: asyncio.Event
) -> bool:
    """Run ``step`` (a service's start-up reads of Redis and PostgreSQL) until both let it
    through: a transient outage (paused, restarting, still loading its data) is no reason to
    end (the chaos suite: a service restarted during a PostgreSQL restart ended with exit 1).
    Returns False when ``stopping`` is set first."""
    backoff = Backoff(0.5, 10.0)
    while not stopping.is_set():
        try:
            await step()
            return True
        except (RedisError, OSError, psycopg.OperationalError) as exc:
            store = "PostgreSQL" if isinstance(exc, psycopg.OperationalError) else "Redis"
            reason = redact(f"{type(exc).__name__}: {exc}")
            log.warning("%s: %s unavailable (%s); retrying", what, store, reason)
            await backoff.sleep(stopping)
    return False


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a numeric HTTP ``Retry-After``; None when absent or an HTTP date (the caller
    then waits its Backoff's delay)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
