"""How far a group is behind its stream: lag, pending, oldest pending age, backlog age."""

from __future__ import annotations

from dataclasses import dataclass

from its_common.streams import now_ms

from .model import id_ms
from .ops import ConsumerOps


@dataclass(frozen=True, slots=True)
class Lag:
    lag_entries: int  # -1 when Redis cannot say (6.2 with a backlog; 7.x after deletions)
    pending: int
    oldest_pending_age_s: float
    backlog_age_s: float


async def sample_lag(ops: ConsumerOps) -> Lag | None:
    """None when the group does not exist (yet)."""
    info = await ops.group_info()
    if info is None:
        return None
    now = now_ms()
    pending = int(info.get("pending", 0) or 0)
    oldest = await ops.oldest_pending_id() if pending else None
    oldest_age = max(0.0, (now - id_ms(oldest)) / 1000) if oldest else 0.0
    last = info.get("last-delivered-id")
    last_id = last.decode() if isinstance(last, bytes) else str(last or "0-0")
    after = await ops.first_after(last_id)
    backlog_age = max(0.0, (now - id_ms(after)) / 1000) if after else 0.0
    raw_lag = info.get("lag")
    # Redis 7 counts the lag; 6.2 only tells "caught up" (0) from "behind" (-1: unknown).
    lag = int(raw_lag) if raw_lag is not None else (0 if after is None else -1)
    return Lag(lag, pending, oldest_age, backlog_age)
