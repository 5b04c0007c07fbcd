"""The HALTED state (durable, in ``service_state``) and the kill switch (a Redis flag).

- ``service_state(service='trader', key='halt')`` holds ``{"halted", "reason", "detail",
  "since_ms"}``; the trader re-reads it every control tick, so it survives restarts and a resume
  written by the CLI takes effect at once.
- ``its:trader:kill`` (a string: JSON ``{"id", "flatten", "reason", "ts_ms"}``) engages the kill
  switch: the running trader halts, cancels every open order and, with ``flatten``, closes every
  position; the flag's id is remembered (``kill_handled``) so a restart does not flatten twice.
  Anyone who can write Redis can set it (CLI, dashboard, alerter).
- Resuming is explicit: :func:`resume` clears the halt and deletes the flag (``its-trader resume``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import redis.asyncio as aioredis

from its_common.risk import Halt
from its_common.streams import now_ms
from its_trader.store import TraderStore

KILL_KEY: Final = "its:trader:kill"
HALT_STATE: Final = "halt"
KILL_HANDLED_STATE: Final = "kill_handled"
KILL_REASON: Final = "kill_switch"


def halt_from_state(value: Any) -> Halt:
    if not isinstance(value, dict) or not value.get("halted"):
        return Halt()
    return Halt(
        True,
        str(value.get("reason", "")),
        str(value.get("detail", "")),
        int(str(value.get("since_ms", 0))),
    )


def halt_to_state(halt: Halt) -> dict[str, Any]:
    return {
        "halted": halt.halted,
        "reason": halt.reason,
        "detail": halt.detail,
        "since_ms": halt.since_ms,
    }


async def load_halt(store: TraderStore) -> Halt:
    return halt_from_state(await store.get_state(HALT_STATE))


async def save_halt(store: TraderStore, halt: Halt) -> None:
    await store.put_state(HALT_STATE, halt_to_state(halt))


async def engage_kill(
    redis: aioredis.Redis, store: TraderStore, *, flatten: bool, reason: str = "manual"
) -> dict[str, Any]:
    """Halt durably, then raise the Redis flag the running trader acts on (cancel, flatten)."""
    ts_ms = now_ms()
    flag: dict[str, Any] = {"id": uuid.uuid4().hex, "flatten": flatten, "reason": reason}
    flag["ts_ms"] = ts_ms
    await save_halt(store, Halt(True, KILL_REASON, reason, ts_ms))
    await redis.set(KILL_KEY, json.dumps(flag))
    return flag


async def read_kill(redis: aioredis.Redis) -> dict[str, Any] | None:
    raw = await redis.get(KILL_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # A bare value (e.g. `SET its:trader:kill 1`) still engages the switch, without flatten.
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return {"id": f"raw:{text}", "flatten": False, "reason": "redis flag", "ts_ms": now_ms()}
    value.setdefault("id", "unnamed")
    return value


async def resume(redis: aioredis.Redis, store: TraderStore) -> Halt:
    """Clear the halt and the kill flag; returns the halt that was cleared."""
    previous = await load_halt(store)
    await redis.delete(KILL_KEY)
    await save_halt(store, Halt())
    return previous
