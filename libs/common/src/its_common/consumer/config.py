"""Settings of one stream consumer (a service builds it from its own settings)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis and the network: retried with backoff (ResponseError NOGROUP is handled apart).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
# Redis is unreachable, loading (BusyLoadingError is a ConnectionError), failing over or slow.
TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    TryAgainError,
    OSError,
)
# A dependency of the handler is unavailable: retried in hand, never a failed delivery.
DEFAULT_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_REDIS_ERRORS,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


@dataclass(frozen=True)
class ConsumerConfig:
    """One consumer's settings. The defaults suit a service; tests shorten the timings.

    ``claim_idle_ms`` is the death threshold: a peer that has not touched the group for that long
    and whose liveness key expired is dead, and only then are its pending entries claimed. It
    must be well above ``block_ms`` and a normal handling time (it is never 0).
    """

    stream: str
    group: str
    consumer: str
    start_id: str = "0"  # where a new group starts: "0" everything, "$" only new entries
    batch_entries: int = 200
    block_ms: int = 1000
    handle_size: int | None = None  # max entries per handler call (None: the whole read batch)
    overlap: bool = False  # read and prepare batch N+1 while batch N is handled
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    max_deliveries: int = 5
    failure_reason: str = "handler_failed"  # dead-letter reason after max_deliveries failures
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    metrics_interval_s: float = 5.0
    service: str = ""  # written into dead-letter records and gap windows
    gap_symbols: tuple[str, ...] = ()  # symbols of the gap window for entries lost to trimming
    transient_errors: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT_ERRORS

    def __post_init__(self) -> None:
        if self.batch_entries < 1:
            raise ValueError("batch_entries must be at least 1")
        if self.block_ms < 1:
            raise ValueError("block_ms must be positive (a consumer must come back to Redis)")
        if self.claim_idle_ms <= self.block_ms:
            raise ValueError(
                f"claim_idle_ms ({self.claim_idle_ms}) must be well above block_ms "
                f"({self.block_ms}): a live consumer blocked in XREADGROUP must never look dead"
            )
        if self.max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if self.handle_size is not None and self.handle_size < 1:
            raise ValueError("handle_size must be at least 1")

    @property
    def label(self) -> str:
        """Short name for logs: the stream's last part (``trades``, ``1m``)."""
        return self.stream.rsplit(":", 1)[-1]
