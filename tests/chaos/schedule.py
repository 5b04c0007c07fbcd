"""The seeded fault schedule: which faults, in which order, how long each lasts.

The short variant applies every kind once; the soak variant repeats every kind in rounds (each
round in its own seeded order) until it has run at least ``soak_minutes``. Within a round, the
kills of the services downstream of storage run in a second lane, at the same time as the feed
and infrastructure faults (their alerts and progress are independent), which halves a round.
The same seed gives the same schedule; the trigger moments themselves are conditions on the
running stack (a minute boundary on the feed clock, a batch in the loader's hands, a decision
just taken).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

Variant = Literal["short", "soak"]

# Every kind of fault, in a stable order (the schedule shuffles it with the seed).
KINDS: Final = (
    "kill_router",  # kill -9 right after a minute boundary on the feed clock
    "kill_loader",  # kill -9 with entries read and not yet acknowledged (mid-batch)
    "kill_features",
    "kill_inference",
    "kill_trader",  # kill -9 right after it read a decision
    "kill_alerter",
    "redis_pause",  # SIGSTOP, then SIGCONT
    "redis_kill",  # kill -9 and a restart on the same data (AOF)
    "postgres_restart",
    "feed_drop",  # every connection aborted and new ones refused for a while
    "feed_stall",  # the feed sends nothing (and loses it) for a while
    "malformed",  # a share of frames malformed
    "duplicates",  # a share of events sent twice
    "max_connections",  # a second client with the same key takes the connection over
    "slow_reader",  # the router frozen; the simulator drops it as a slow reader (1011)
)


# Faults of the second lane: services downstream of storage, each with its own alert.
DOWNSTREAM: Final = frozenset({"kill_features", "kill_inference", "kill_trader"})
# Faults that run alone: without the alerter no other fault's alert can fire.
SOLO: Final = frozenset({"kill_alerter"})


@dataclass(frozen=True)
class PlannedFault:
    kind: str
    round: int
    hold_s: float  # how long the fault lasts (pause, stall, frame-fault period), 0 = instant


@dataclass(frozen=True)
class Durations:
    redis_pause_s: float
    feed_fault_s: float  # stall, refused connections, malformed/duplicate periods
    slow_reader_s: float
    store_down_s: float  # Redis killed, PostgreSQL stopped: down this long before the start


DURATIONS: Final[dict[Variant, Durations]] = {
    "short": Durations(redis_pause_s=5, feed_fault_s=4, slow_reader_s=3, store_down_s=2),
    # the 30 s Redis pause; longer feed faults
    "soak": Durations(redis_pause_s=30, feed_fault_s=10, slow_reader_s=5, store_down_s=5),
}


def hold_for(kind: str, durations: Durations) -> float:
    if kind == "redis_pause":
        return durations.redis_pause_s
    if kind in {"feed_drop", "feed_stall", "malformed", "duplicates"}:
        return durations.feed_fault_s
    if kind == "slow_reader":
        return durations.slow_reader_s
    if kind in {"redis_kill", "postgres_restart"}:
        return durations.store_down_s
    return 0.0


def build_schedule(variant: Variant, seed: int, rounds: int | None = None) -> list[PlannedFault]:
    """Every kind once per round, each round in a seeded order."""
    rng = random.Random(seed)
    durations = DURATIONS[variant]
    count = rounds if rounds is not None else (1 if variant == "short" else 1_000)
    plan: list[PlannedFault] = []
    for number in range(1, count + 1):
        kinds = list(KINDS)
        rng.shuffle(kinds)
        plan += [PlannedFault(kind, number, hold_for(kind, durations)) for kind in kinds]
    return plan


def lanes(plan: list[PlannedFault], number: int) -> tuple[list[PlannedFault], list[PlannedFault]]:
    """Round ``number`` of ``plan`` as its two concurrent lanes (each in schedule order),
    without the :data:`SOLO` faults."""
    round_faults = [f for f in plan if f.round == number and f.kind not in SOLO]
    return (
        [f for f in round_faults if f.kind not in DOWNSTREAM],
        [f for f in round_faults if f.kind in DOWNSTREAM],
    )


def solo(plan: list[PlannedFault], number: int) -> list[PlannedFault]:
    """Round ``number``'s faults that run alone, after both lanes."""
    return [f for f in plan if f.round == number and f.kind in SOLO]
