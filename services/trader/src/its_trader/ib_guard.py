"""Paper-only guard and request pacing for the IB adapter (pure, dependency-free parts).

Live trading needs an explicit ``ITS_ALLOW_LIVE_TRADING=true``: without it the adapter refuses
the live ports (IB Gateway 4001, TWS 7496) and any account id that does not start with ``DU``
(IB's paper accounts).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

LIVE_PORTS: Final = frozenset({4001, 7496})
PAPER_PORTS: Final = frozenset({4002, 7497})
PAPER_ACCOUNT_PREFIX: Final = "DU"
ALLOW_LIVE_ENV: Final = "ITS_ALLOW_LIVE_TRADING"


class LiveTradingRefusedError(RuntimeError):
    """The adapter was pointed at a live port or a live account without the explicit opt-in."""


def live_trading_allowed(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(ALLOW_LIVE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def paper_violations(
    port: int, accounts: Iterable[str] = (), *, allow_live: bool = False
) -> list[str]:
    """Why this connection would be live (empty = paper, or live explicitly allowed)."""
    if allow_live:
        return []
    problems = []
    if port in LIVE_PORTS:
        problems.append(f"port {port} is a live trading port (paper: 4002 gateway, 7497 TWS)")
    for account in accounts:
        if account and not account.startswith(PAPER_ACCOUNT_PREFIX):
            problems.append(f"account {account!r} is not a paper account (DU...)")
    return problems


def ensure_paper(port: int, accounts: Iterable[str] = (), *, allow_live: bool = False) -> None:
    problems = paper_violations(port, accounts, allow_live=allow_live)
    if problems:
        raise LiveTradingRefusedError(
            "; ".join(problems) + f"; set {ALLOW_LIVE_ENV}=true to trade a live account"
        )


class TokenBucket:
    """At most ``capacity`` messages at once and ``rate`` per second on average.

    Over any one-second window at most ``capacity + rate`` messages pass: the defaults (45/s,
    burst 4) keep the adapter under IB's 50 messages/s.
    """

    def __init__(
        self,
        rate: float = 45.0,
        capacity: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for one token (first come, first served)."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
                self.waited_s += wait
                await asyncio.sleep(wait)
