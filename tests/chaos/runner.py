"""One chaos run: start the stack, apply the schedule, let the data settle, check, stop, report.

Every wait is a condition with a generous bound; a bound that runs out is a reported problem,
never a hang. The window compared with REST ends at least 17 market minutes after the last
fault (late reports and finality), so every fault lies inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import checks
from tests.chaos.checks import Check
from tests.chaos.faults import FaultResult, FaultRunner
from tests.chaos.memory import BOUNDS_MIB, MemorySampler
from tests.chaos.progress import probe
from tests.chaos.report import held, render
from tests.chaos.schedule import PlannedFault, Variant, build_schedule, lanes, solo
from tests.chaos.stack import ChaosStack, StackConfig
from tests.router.harness import wait_until

MINUTE_MS = 60_000
START_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 180.0
# Minutes after the first bar the stack saw of a session whose features are not complete yet.
WARMUP_MINUTES = 5


@dataclass
class Outcome:
    held: bool
    text: str
    wall_s: float
    results: list[FaultResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


def _eventually(make: Callable[[], Check], timeout_s: float) -> Check:
    """The check once it holds, or its last result when ``timeout_s`` runs out (gap backfills
    and the loader's last batches may still be landing when the feed has moved on)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = make()
        if result.ok or time.monotonic() >= deadline:
            return result
        time.sleep(2)


def run(
    variant: Variant,
    seed: int,
    work_dir: Path,
    *,
    soak_minutes: float = 30.0,
    rounds: int | None = None,
    say: Callable[[str], None] = print,
    config: StackConfig | None = None,
) -> Outcome:
    started = time.monotonic()
    children_before = set(checks.descendants())
    stack = ChaosStack(work_dir, config or StackConfig())
    results: list[FaultResult] = []
    found: list[Check] = []
    sampler: MemorySampler | None = None
    failure: str | None = None
    try:
        say(f"starting the stack in {work_dir}")
        stack.start()
        sampler = MemorySampler(stack).start()
        first_feed = wait_until(stack.feed_clock_ms, START_TIMEOUT_S, "the first feed event")
        wait_until(probe(stack, "decisions"), START_TIMEOUT_S, "the first decision")
        say(f"stack up after {time.monotonic() - started:.0f}s; applying faults")
        faults = FaultRunner(stack)
        plan = build_schedule(variant, seed, rounds)

        def apply_all(lane: list[PlannedFault]) -> None:
            for planned in lane:
                result = faults.apply(planned)
                results.append(result)
                recovery = "-" if result.recovery_s is None else f"{result.recovery_s:.1f}s"
                problems = "".join(f"; {p}" for p in result.problems)
                say(
                    f"[{time.monotonic() - started:5.0f}s] round {planned.round} {planned.kind}: "
                    f"recovered in {recovery}{problems}"
                )

        for number in sorted({f.round for f in plan}):
            minutes = (time.monotonic() - started) / 60
            if variant == "soak" and rounds is None and number > 1 and minutes >= soak_minutes:
                break
            with ThreadPoolExecutor(2) as pool:
                for future in [pool.submit(apply_all, lane) for lane in lanes(plan, number)]:
                    future.result()
            apply_all(solo(plan, number))
        results.sort(key=lambda r: r.started)
        after_faults = stack.feed_clock_ms()
        settled = after_faults + checks.SETTLE_MS + checks.LATE_REPORT_MS + 2 * MINUTE_MS
        wait_until(
            lambda: stack.feed_clock_ms() > settled, SETTLE_TIMEOUT_S, "the feed past the faults"
        )
        lo, hi = checks.window(first_feed, stack.feed_clock_ms())
        ranges = checks.session_ranges(lo, hi)
        say(f"checking {len(ranges)} session range(s) against REST")
        found.append(_eventually(lambda: checks.check_bars(stack, ranges), 60))
        found.append(_eventually(lambda: checks.check_trades(stack, ranges), 60))
        found.append(checks.check_orders(stack))
        found.append(checks.check_decisions(stack, ranges, WARMUP_MINUTES, results, first_feed))
        found.append(checks.check_alerts(stack, results))
    except Exception as exc:  # reported as the run's failure; the stack is still stopped
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        peaks = sampler.stop() if sampler is not None else {}
        stack.stop()
    found.append(checks.check_memory(peaks, BOUNDS_MIB))
    found.append(checks.check_nothing_left(stack, children_before))
    if failure is not None:
        broken = Check("run completed")
        broken.differ(failure)
        found.insert(0, broken)
    wall_s = time.monotonic() - started
    text = render(variant, seed, results, found, wall_s)
    return Outcome(held(results, found), text, wall_s, results, found)
